/** The model CLI end to end on real files: init → sample → logprobs agree; bad input exits 2 naming it. */
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { wordLevelTokenizer } from '../src/models/tokenizer.js';
import { duelBin } from '../src/platform/paths.js';
import { fileTempDir } from './helpers/tmp.js';

const BIN = duelBin();
const dir = fileTempDir('duel-cli-');

const duel = (...args: string[]) =>
  spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', cwd: dir });
const lines = (out: string) =>
  out
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));

describe('duel model / duel sample', () => {
  const model = join(dir, 'm');
  const sample = (...args: string[]) =>
    duel(
      'sample',
      '--model',
      model,
      '--prompts',
      'prompts.jsonl',
      '-n',
      '3',
      '--max-new-tokens',
      '4',
      '--seed',
      '9',
      ...args,
    );
  const sft = (...args: string[]) => duel('train', 'sft', '--model', model, '--data', 'sft.jsonl', ...args);

  it('init writes a loadable model directory with its tokenizer', () => {
    const tok = wordLevelTokenizer(['a', 'b', 'c', 'd', 'e', 'f']);
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tok.tokenizerJson));
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(tok.tokenizerConfig));
    writeFileSync(
      join(dir, 'config.json'),
      JSON.stringify({
        model_type: 'qwen2',
        vocab_size: 10,
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        max_position_embeddings: 32,
        eos_token_id: 3,
        pad_token_id: 1,
      }),
    );
    const r = duel(
      'model',
      'init',
      '--arch',
      'llama',
      '--config',
      'config.json',
      '--out',
      model,
      '--tokenizer',
      'tokenizer.json',
      '--seed',
      '5',
    );
    expect(r.stderr).toContain('wrote');
    expect(r.status).toBe(0);
    expect(JSON.parse(readFileSync(join(model, 'config.json'), 'utf8')).architectures).toEqual([
      'Qwen2ForCausalLM',
    ]);
  });

  it('samples text and id prompts; the log-probs it reports are what logprobs computes', () => {
    writeFileSync(join(dir, 'prompts.jsonl'), '{"prompt":"a b c","id":"x"}\n{"prompt_ids":[5,6]}\n');
    const r = sample('--quiet');
    expect(r.status).toBe(0);
    const out = lines(r.stdout);
    expect(out).toHaveLength(2);
    expect(out[0]).toMatchObject({ id: 'x', prompt_ids: [4, 5, 6] });
    expect(out[0].completion_ids).toHaveLength(3);
    expect(out[0].completions).toHaveLength(3);
    // the same seed gives the same samples
    expect(lines(sample('--quiet').stdout)).toEqual(out);

    writeFileSync(
      join(dir, 'scored.jsonl'),
      `${out.map((o) => JSON.stringify({ prompt_ids: o.prompt_ids, completion_ids: o.completion_ids })).join('\n')}\n`,
    );
    const lp = duel('model', 'logprobs', '--model', model, '--input', 'scored.jsonl', '--quiet');
    expect(lp.status).toBe(0);
    const scored = lines(lp.stdout).flatMap((rec) => rec.logprobs as number[]);
    const sampled = out.flatMap((o) => o.logprobs as number[]);
    expect(scored).toHaveLength(6);
    for (const [k, x] of scored.entries()) expect(x).toBeCloseTo(sampled[k]!, 4);
  });

  it('samples in float16 (--dtype or DUEL_RUNTIME_DTYPE): the greedy tokens of float32, log-probs within 0.01', () => {
    const greedy = (...args: string[]) => sample('--temperature', '0', '-n', '1', '--quiet', ...args);
    const f32 = greedy();
    expect(f32.status).toBe(0);
    const f16 = greedy('--dtype', 'float16');
    expect(f16.stderr).toBe('');
    expect(f16.status).toBe(0);
    const [a, b] = [lines(f32.stdout), lines(f16.stdout)];
    expect(b.map((o) => o.completion_ids)).toEqual(a.map((o) => o.completion_ids));
    const [la, lb] = [a, b].map((out) => out.flatMap((o) => o.logprobs as number[]));
    for (const [k, x] of lb!.entries()) expect(Math.abs(x - la![k]!)).toBeLessThan(0.01);
    const env = spawnSync(
      process.execPath,
      [
        BIN,
        'sample',
        '--model',
        model,
        '--prompts',
        'prompts.jsonl',
        '--temperature',
        '0',
        '--max-new-tokens',
        '4',
        '--seed',
        '9',
        '--quiet',
      ],
      { encoding: 'utf8', cwd: dir, env: { ...process.env, DUEL_RUNTIME_DTYPE: 'float16' } },
    );
    expect(lines(env.stdout)).toEqual(b);
    const bad = greedy('--dtype', 'bfloat16');
    expect(bad.status).toBe(2);
    expect(bad.stderr).toBe("duel: --dtype: must be one of float32, float16, got 'bfloat16'\n");
  });

  it('exits 2 naming the line and field of a bad record, or the bad flag', () => {
    writeFileSync(
      join(dir, 'bad.jsonl'),
      '{"prompt_ids":[4],"completion_ids":[[5]]}\n{"prompt_ids":[],"completion_ids":[[5]]}\n',
    );
    const r = duel('model', 'logprobs', '--model', model, '--input', 'bad.jsonl');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/bad\.jsonl:2: prompt_ids: .*>=1/);
    const s = duel('sample', '--model', model, '--prompts', 'prompts.jsonl', '--temperature', '-1');
    expect(s.status).toBe(2);
    expect(s.stderr).toBe("duel: --temperature: must be >= 0, got '-1'\n");
    const m = duel('model', 'logprobs', '--model', join(dir, 'nowhere'), '--input', 'bad.jsonl');
    expect(m.status).toBe(2);
    // Training settings are checked, by flag, before any file is read.
    const train = (...flags: string[]) =>
      duel(
        'train',
        'sft',
        '--model',
        join(dir, 'nowhere'),
        '--data',
        'none.jsonl',
        '--out',
        join(dir, 'o'),
        ...flags,
      );
    const t = train('--lr', '-1', '--schedule', 'foo');
    expect(t.status).toBe(2);
    expect(t.stderr).toMatch(/^duel: --lr: Too small.*; --schedule: .*"cosine"/);
    expect(train('--steps', '2', '--epochs', '3').stderr).toBe(
      'duel: --steps: set steps or epochs, not both\n',
    );
  });

  it('judge init + compare fill K×K prefs, win rates, scores and the best of each record', () => {
    writeFileSync(
      join(dir, 'judge.json'),
      JSON.stringify({
        model_type: 'duel_pairrm',
        encoder: {
          model_type: 'llama',
          vocab_size: 12,
          hidden_size: 8,
          intermediate_size: 16,
          num_hidden_layers: 1,
          num_attention_heads: 2,
        },
        source_token_id: 9,
        candidate1_token_id: 10,
        candidate2_token_id: 11,
      }),
    );
    expect(duel('judge', 'init', '--config', 'judge.json', '--out', 'j').status).toBe(0);
    writeFileSync(join(dir, 'pairs.jsonl'), '{"prompt_ids":[1,2],"completion_ids":[[3],[4,5],[6]],"id":7}\n');
    const r = duel('judge', 'compare', '--judge', 'j', '--input', 'pairs.jsonl', '--quiet');
    expect(r.status).toBe(0);
    const [rec] = lines(r.stdout);
    expect(rec.id).toBe(7);
    expect(rec.prefs).toHaveLength(3);
    for (let i = 0; i < 3; i++)
      for (let j = 0; j < 3; j++) expect(rec.prefs[i][j] + rec.prefs[j][i]).toBeCloseTo(1, 12);
    expect(rec.winrates).toHaveLength(3);
    expect(rec.best).toBe(rec.scores.indexOf(Math.max(...rec.scores)));
    writeFileSync(join(dir, 'one.jsonl'), '{"prompt_ids":[1],"completion_ids":[[3]]}\n');
    const bad = duel('judge', 'compare', '--judge', 'j', '--input', 'one.jsonl');
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('one.jsonl:1: completion_ids: needs at least two completions to compare');
  });

  it('judge compare reads text for a PairRM published with spm.model: the scores of the reference ids', () => {
    const spm = new URL('./fixtures/spm/', import.meta.url).pathname;
    const expected = JSON.parse(readFileSync(join(spm, 'expected.json'), 'utf8'));
    const v = expected.vocab_size;
    writeFileSync(
      join(dir, 'pairrm.json'),
      JSON.stringify({
        architectures: ['DebertaV2PairRM'],
        model_type: 'deberta-v2',
        vocab_size: v + 4,
        initializer_range: 1,
        hidden_size: 8,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        intermediate_size: 16,
        cls_token_id: 1,
        sep_token_id: 2,
        source_prefix_id: v + 1,
        cand1_prefix_id: v + 2,
        cand2_prefix_id: v + 3,
      }),
    );
    expect(duel('judge', 'init', '--config', 'pairrm.json', '--out', 'pairrm').status).toBe(0);
    const compare = (records: object[]) => {
      writeFileSync(join(dir, 'spm-pairs.jsonl'), records.map((r) => JSON.stringify(r)).join('\n'));
      const r = duel('judge', 'compare', '--judge', 'pairrm', '--input', 'spm-pairs.jsonl', '--quiet');
      return { ...r, records: r.status === 0 ? lines(r.stdout) : [] };
    };
    const [a, b, c] = expected.encoded;
    const text = { prompt: a.text, completions: [b.text, c.text] };
    const noTokenizer = compare([text]);
    expect(noTokenizer.status).toBe(2);
    expect(noTokenizer.stderr).toContain('has no tokenizer.json or spm.model to encode it (give prompt_ids)');
    copyFileSync(join(spm, 'spm.model'), join(dir, 'pairrm', 'spm.model'));
    const byText = compare([text]);
    expect(byText.status).toBe(0);
    const byIds = compare([{ prompt_ids: a.ids, completion_ids: [b.ids, c.ids] }]);
    expect(byText.records[0].prefs).toEqual(byIds.records[0].prefs);
    expect(byText.records[0].prefs[0][1]).not.toBeCloseTo(0.5, 3);
  });

  it('a Bradley-Terry reward model: judge init, train judge and judge compare take its directory', () => {
    const rm = {
      architectures: ['Qwen3ForSequenceClassification'],
      model_type: 'qwen3',
      vocab_size: 12,
      hidden_size: 8,
      intermediate_size: 16,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      head_dim: 4,
      pad_token_id: 0,
      id2label: { 0: 'LABEL_0' },
    };
    writeFileSync(join(dir, 'rm.json'), JSON.stringify(rm));
    const init = duel('judge', 'init', '--config', 'rm.json', '--out', 'rm');
    expect(init.stderr).toContain('wrote rm (qwen3 reward model, 1 layers)');
    writeFileSync(
      join(dir, 'rm-pairs.jsonl'),
      '{"prompt_ids":[1,2],"chosen_ids":[3,3],"rejected_ids":[4]}\n{"prompt_ids":[5],"chosen_ids":[3],"rejected_ids":[6,7]}\n',
    );
    const t = duel(
      'train',
      'judge',
      '--judge',
      'rm',
      '--data',
      'rm-pairs.jsonl',
      '--out',
      'rm2',
      '--steps',
      '20',
      '--lr',
      '1e-2',
      '--quiet',
    );
    expect(t.stderr).toContain('wrote rm2');
    const m = JSON.parse(readFileSync(join(dir, 'rm2', 'metrics.json'), 'utf8'));
    expect(m).toMatchObject({ algo: 'judge', steps: 20 });
    expect(m.loss_last).toBeLessThan(m.loss_first);
    expect(JSON.parse(readFileSync(join(dir, 'rm2', 'config.json'), 'utf8')).architectures).toEqual([
      'Qwen3ForSequenceClassification',
    ]);
    writeFileSync(join(dir, 'rm-compare.jsonl'), '{"prompt_ids":[1,2],"completion_ids":[[3,3],[4]]}\n');
    const c = duel('judge', 'compare', '--judge', 'rm2', '--input', 'rm-compare.jsonl', '--quiet');
    expect(c.status).toBe(0);
    const [rec] = lines(c.stdout);
    expect(rec.prefs[0][1]).toBeGreaterThan(0.5); // the trained preference: 3s over 4s
    expect(rec.best).toBe(0);
    writeFileSync(join(dir, 'rm-bad.json'), JSON.stringify({ ...rm, id2label: { 0: 'a', 1: 'b' } }));
    const bad = duel('judge', 'init', '--config', 'rm-bad.json', '--out', 'rm3');
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/id2label.*2 labels; a Bradley-Terry reward model has one/);
  });

  it('train sft lowers the loss and writes a model directory with metrics.json; train round checks its inputs', () => {
    writeFileSync(
      join(dir, 'sft.jsonl'),
      '{"prompt_ids":[4,5],"completion_ids":[6,7]}\n{"prompt_ids":[8],"completion_ids":[[4,4]]}\n',
    );
    const sixSgdSteps = ['--steps', '6', '--optimizer', 'sgd', '--lr', '0.5', '--batch-size', '2', '--quiet'];
    const r = sft('--out', 'sft-out', ...sixSgdSteps);
    expect(r.stderr).toContain('wrote sft-out');
    expect(r.status).toBe(0);
    const metrics = JSON.parse(readFileSync(join(dir, 'sft-out', 'metrics.json'), 'utf8'));
    expect(metrics).toMatchObject({ algo: 'sft', steps: 6, skipped_steps: 0, diverged: false });
    expect(metrics.loss_last).toBeLessThan(metrics.loss_first);
    // In mixed precision: the same steps, the same first loss to half's rounding, the loss scale reported.
    const half = sft('--out', 'sft16-out', ...sixSgdSteps, '--dtype', 'float16');
    expect(half.status, half.stderr).toBe(0);
    const m16 = JSON.parse(readFileSync(join(dir, 'sft16-out', 'metrics.json'), 'utf8'));
    expect(m16).toMatchObject({ steps: 6, skipped_steps: 0, diverged: false });
    // An overflowed step halves GradScaler's 2¹⁶ (this run overflows once, at lr 0.5).
    expect(m16.loss_scale).toBe(65536 / 2 ** m16.overflow_steps);
    expect(half.stderr).toContain(
      `0 skipped, ${m16.overflow_steps} overflowed in float16 (loss scale now ${m16.loss_scale})`,
    );
    expect(m16.loss_first).toBeCloseTo(metrics.loss_first, 2);
    expect(m16.loss_last).toBeLessThan(m16.loss_first);
    expect(metrics.overflow_steps).toBeUndefined();
    // Three steps a runtime call: the same six steps, the same losses.
    const folded = sft('--out', 'sft-fold-out', ...sixSgdSteps, '--fold-steps', '3');
    expect(folded.status, folded.stderr).toBe(0);
    const mFold = JSON.parse(readFileSync(join(dir, 'sft-fold-out', 'metrics.json'), 'utf8'));
    expect(mFold).toMatchObject({ steps: 6, skipped_steps: 0 });
    expect(mFold.loss_first).toBeCloseTo(metrics.loss_first, 5);
    expect(mFold.loss_last).toBeCloseTo(metrics.loss_last, 4);
    // Recomputing the layers' activations: the same six steps, the same losses, the same weights.
    const recomputed = sft('--out', 'sft-ckpt-out', ...sixSgdSteps, '--gradient-checkpointing');
    expect(recomputed.status, recomputed.stderr).toBe(0);
    const mCkpt = JSON.parse(readFileSync(join(dir, 'sft-ckpt-out', 'metrics.json'), 'utf8'));
    expect([mCkpt.loss_first, mCkpt.loss_last]).toEqual([metrics.loss_first, metrics.loss_last]);
    expect(readFileSync(join(dir, 'sft-ckpt-out', 'model.safetensors'))).toEqual(
      readFileSync(join(dir, 'sft-out', 'model.safetensors')),
    );
    const halfFold = sft('--out', 'sft-bad', ...sixSgdSteps, '--fold-steps', '3', '--dtype', 'float16');
    expect(halfFold.status).toBe(2);
    expect(halfFold.stderr).toMatch(/fold_steps: cannot fold float16 steps/);
    const badDtype = sft('--out', 'sft-bad', '--steps', '1', '--dtype', 'bfloat16');
    expect(badDtype.status).toBe(2);
    expect(badDtype.stderr).toBe("duel: --dtype: must be one of float32, float16, got 'bfloat16'\n");
    // the trained directory is a model like any other
    const again = duel(
      'sample',
      '--model',
      'sft-out',
      '--prompts',
      'prompts.jsonl',
      '--max-new-tokens',
      '4',
      '--quiet',
    );
    expect(again.stderr).toBe('');
    expect(again.status).toBe(0);

    writeFileSync(
      join(dir, 'round.jsonl'),
      '{"prompt_ids":[4],"completion_ids":[[5],[6,7]],"prefs":[[0.5,0.9],[0.1,0.5]]}\n',
    );
    const inpo = (...extra: string[]) =>
      duel(
        'train',
        'round',
        '--algo',
        'inpo',
        '--model',
        model,
        '--data',
        'round.jsonl',
        '--out',
        'r-out',
        ...extra,
      );
    const noRef = inpo();
    expect(noRef.status).toBe(2);
    expect(noRef.stderr).toContain('ref: inpo needs a reference model (--ref)');
    const ok = inpo('--ref', model, '--set', 'eta=2', '--set', 'tau=0.1', '--quiet');
    expect(ok.status).toBe(0);
    expect(JSON.parse(readFileSync(join(dir, 'r-out', 'metrics.json'), 'utf8')).algo).toBe('inpo');
    const badSet = inpo('--ref', model, '--set', 'eta=20', '--set', 'tau=0.1');
    expect(badSet.status).toBe(2);
    expect(badSet.stderr).toContain('tau: inpo: eta·tau must be below 1');
  });

  it('train judge and offline dpo read labelled pairs', () => {
    writeFileSync(
      join(dir, 'labelled.jsonl'),
      '{"prompt_ids":[1,2],"chosen_ids":[3,3],"rejected_ids":[4]}\n{"prompt_ids":[5],"chosen_ids":[3],"rejected_ids":[6,7]}\n',
    );
    const j = duel(
      'train',
      'judge',
      '--judge',
      'j',
      '--data',
      'labelled.jsonl',
      '--out',
      'j2',
      '--steps',
      '3',
      '--quiet',
    );
    expect(j.stderr).toContain('wrote j2');
    expect(JSON.parse(readFileSync(join(dir, 'j2', 'metrics.json'), 'utf8'))).toMatchObject({
      algo: 'judge',
      steps: 3,
    });
    // Soft labels: a pair's preference is the target of its loss, so a pair labelled ½ pulls
    // the judge's logit for it to 0 from wherever it starts, and a surely-chosen pair does not.
    writeFileSync(
      join(dir, 'soft.jsonl'),
      '{"prompt_ids":[1,2],"chosen_ids":[3,3],"rejected_ids":[4],"preference":0.5}\n',
    );
    const soft = (out: string, file: string) =>
      duel(
        'train',
        'judge',
        '--judge',
        'j',
        '--data',
        file,
        '--out',
        out,
        '--steps',
        '30',
        '--lr',
        '0.01',
        '--quiet',
      );
    writeFileSync(join(dir, 'hard.jsonl'), '{"prompt_ids":[1,2],"chosen_ids":[3,3],"rejected_ids":[4]}\n');
    expect(soft('j-soft', 'soft.jsonl').status).toBe(0);
    expect(soft('j-hard', 'hard.jsonl').status).toBe(0);
    const loss = (d: string) => JSON.parse(readFileSync(join(dir, d, 'metrics.json'), 'utf8')).loss_last;
    expect(loss('j-soft')).toBeGreaterThan(Math.LN2 - 0.01);
    expect(loss('j-hard')).toBeLessThan(0.2);
    writeFileSync(
      join(dir, 'bad-pref.jsonl'),
      '{"prompt_ids":[1,2],"chosen_ids":[3,3],"rejected_ids":[4],"preference":1.5}\n',
    );
    const bad = soft('j-bad', 'bad-pref.jsonl');
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/bad-pref\.jsonl:1: preference: .*<=1/);
    expect(existsSync(join(dir, 'j-bad'))).toBe(false);
    const d = duel(
      'train',
      'round',
      '--algo',
      'dpo',
      '--model',
      model,
      '--ref',
      model,
      '--data',
      'labelled.jsonl',
      '--out',
      'd2',
      '--steps',
      '2',
      '--quiet',
    );
    expect(d.stderr).toContain('wrote d2');
    expect(JSON.parse(readFileSync(join(dir, 'd2', 'metrics.json'), 'utf8')).loss_first).toBeCloseTo(
      Math.LN2,
      5,
    );
  });

  it('a diverged round writes no checkpoint and says why', () => {
    const r = sft(
      '--out',
      'boom',
      '--optimizer',
      'sgd',
      '--lr',
      '1e30',
      '--grad-clip',
      '0',
      '--steps',
      '4',
      '--quiet',
    );
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(
      /training diverged \(\d of 4 steps had a non-finite loss or gradient\): no checkpoint written/,
    );
    expect(existsSync(join(dir, 'boom'))).toBe(false);
  });

  it("train reads text records through the model directory's tokenizer, and says when it cannot", () => {
    writeFileSync(
      join(dir, 'text.jsonl'),
      '{"prompt":"a b","completion":"c d"}\n{"prompt":"e","completions":["f","a c"]}\n',
    );
    const ok = duel(
      'train',
      'sft',
      '--model',
      model,
      '--data',
      'text.jsonl',
      '--out',
      'text-out',
      '--steps',
      '2',
      '--quiet',
    );
    expect(ok.stderr).toContain('wrote text-out');
    expect(JSON.parse(readFileSync(join(dir, 'text-out', 'metrics.json'), 'utf8')).tokens).toBe(
      2 * (4 + 2 + 3),
    );
    writeFileSync(join(dir, 'text-pairs.jsonl'), '{"prompt":"a","chosen":"b","rejected":"c"}\n');
    const noTok = duel('train', 'judge', '--judge', 'j', '--data', 'text-pairs.jsonl', '--out', 'j3');
    expect(noTok.status).toBe(2);
    expect(noTok.stderr).toMatch(
      /text-pairs\.jsonl: record 1: prompt: is text, and .* has no tokenizer\.json/,
    );
  });
});
