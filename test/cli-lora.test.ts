/**
 * LoRA on the command line, on real files: `--adapter` on `duel model logprobs` and `duel sample`
 * gives what `duel model merge`'s merged model gives; an adapter for another model exits 2 naming
 * the tensor and both shapes.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { rng } from '../src/models/common/rng.js';
import { parseLlamaConfig } from '../src/models/llama/config.js';
import { initLlamaWeights } from '../src/models/llama/weights.js';
import { initAdapter, writeAdapterDir } from '../src/models/lora/adapter.js';
import { parseLoraFlag } from '../src/models/lora/config.js';
import { saveModelDir } from '../src/models/model-dir.js';
import { duelBin } from '../src/platform/paths.js';
import { fileTempDir } from './helpers/tmp.js';

const dir = fileTempDir('duel-cli-lora-');
const duel = (...args: string[]) =>
  spawnSync(process.execPath, [duelBin(), ...args], { encoding: 'utf8', cwd: dir });
const lines = (out: string) =>
  out
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));

const config = {
  model_type: 'llama',
  vocab_size: 12,
  hidden_size: 16,
  intermediate_size: 32,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  max_position_embeddings: 32,
  pad_token_id: 0,
};
const cfg = parseLlamaConfig(config);
saveModelDir(join(dir, 'base'), cfg, initLlamaWeights(cfg, 1));
const adapter = initAdapter(cfg, parseLoraFlag('rank=4,alpha=8,targets=all'), 2);
const next = rng(3);
for (const [name, t] of Object.entries(adapter.tensors))
  if (name.endsWith('lora_B.weight')) t.data = t.data.map(() => (next() - 0.5) * 2);
writeAdapterDir(join(dir, 'adapter'), adapter, 'base');
writeFileSync(
  join(dir, 'records.jsonl'),
  `${JSON.stringify({ prompt_ids: [1, 2], completion_ids: [[3, 4], [5]] })}\n${JSON.stringify({ prompt_ids: [6], completion_ids: [[7, 8, 9]] })}\n`,
);
writeFileSync(
  join(dir, 'prompts.jsonl'),
  `${JSON.stringify({ prompt_ids: [1, 2] })}\n${JSON.stringify({ prompt_ids: [3] })}\n`,
);

describe('LoRA on the command line', () => {
  it('logprobs and samples with --adapter equal those of the merged model', () => {
    expect(duel('model', 'merge', '--model', 'base', '--adapter', 'adapter', '--out', 'merged').status).toBe(
      0,
    );
    const logprobs = (...extra: string[]) => {
      const r = duel('model', 'logprobs', '--input', 'records.jsonl', '--quiet', ...extra);
      expect(r.status, r.stderr).toBe(0);
      return lines(r.stdout).flatMap((l: { logprobs: number[] }) => l.logprobs);
    };
    const withAdapter = logprobs('--model', 'base', '--adapter', 'adapter');
    const merged = logprobs('--model', 'merged');
    const plain = logprobs('--model', 'base');
    for (const [i, x] of withAdapter.entries()) expect(x).toBeCloseTo(merged[i]!, 4);
    expect(withAdapter).not.toEqual(plain);
    const sample = (...extra: string[]) => {
      const r = duel(
        'sample',
        '--prompts',
        'prompts.jsonl',
        '-n',
        '2',
        '--max-new-tokens',
        '4',
        '--seed',
        '5',
        '--quiet',
        ...extra,
      );
      expect(r.status, r.stderr).toBe(0);
      return lines(r.stdout).map((l: { completion_ids: number[][] }) => l.completion_ids);
    };
    const adapted = sample('--model', 'base', '--adapter', 'adapter');
    expect(adapted.flat(2).length).toBe(2 * 2 * 4);
    expect(adapted).toEqual(sample('--model', 'merged'));
    expect(adapted).not.toEqual(sample('--model', 'base'));
  });

  it('refuses an adapter made for another model size, naming the tensor and both shapes (exit 2)', () => {
    const wide = parseLlamaConfig({ ...config, hidden_size: 32 });
    writeAdapterDir(
      join(dir, 'wide'),
      initAdapter(wide, parseLoraFlag('rank=4,alpha=8,targets=q_proj'), 1),
      'wide',
    );
    const r = duel('model', 'logprobs', '--model', 'base', '--adapter', 'wide', '--input', 'records.jsonl');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(
      /base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight: has shape \[4,32\], the base model implies \[4,16\]/,
    );
  });
});

describe('training an adapter on the command line', () => {
  it('trains a fresh adapter with --lora, continues it with --adapter, and the result loads where the base does', () => {
    writeFileSync(
      join(dir, 'round.jsonl'),
      `${[
        {
          prompt_ids: [1, 2],
          completion_ids: [[3, 4], [5], [6, 7]],
          prefs: [
            [0.5, 0.8, 0.3],
            [0.2, 0.5, 0.6],
            [0.7, 0.4, 0.5],
          ],
        },
        {
          prompt_ids: [8],
          completion_ids: [[9], [10, 11], [2, 2]],
          prefs: [
            [0.5, 0.1, 0.45],
            [0.9, 0.5, 0.65],
            [0.55, 0.35, 0.5],
          ],
        },
      ]
        .map((r) => JSON.stringify(r))
        .join('\n')}\n`,
    );
    const train = (...extra: string[]) =>
      duel(
        'train',
        'round',
        '--algo',
        'sppo',
        '--model',
        'base',
        '--data',
        'round.jsonl',
        '--optimizer',
        'sgd',
        '--lr',
        '0.5',
        '--steps',
        '2',
        '--batch-size',
        '2',
        '--quiet',
        ...extra,
      );
    const first = train('--lora', 'rank=2,alpha=4,targets=q_proj+v_proj', '--out', 'trained');
    expect(first.status, first.stderr).toBe(0);
    const config = JSON.parse(readFileSync(join(dir, 'trained', 'adapter_config.json'), 'utf8'));
    expect(config).toMatchObject({
      peft_type: 'LORA',
      r: 2,
      lora_alpha: 4,
      target_modules: ['q_proj', 'v_proj'],
    });
    expect(JSON.parse(readFileSync(join(dir, 'trained', 'metrics.json'), 'utf8'))).toMatchObject({
      algo: 'sppo',
      steps: 2,
    });
    // Only the adapter moved: it now changes the model's log-probs (a fresh one does not).
    const logprobs = (...extra: string[]) =>
      lines(
        duel('model', 'logprobs', '--model', 'base', '--input', 'records.jsonl', '--quiet', ...extra).stdout,
      ).flatMap((l: { logprobs: number[] }) => l.logprobs);
    expect(logprobs('--adapter', 'trained')).not.toEqual(logprobs());
    const again = train('--adapter', 'trained', '--out', 'trained-2');
    expect(again.status, again.stderr).toBe(0);
    expect(logprobs('--adapter', 'trained-2')).not.toEqual(logprobs('--adapter', 'trained'));
    const both = train('--adapter', 'trained', '--lora', 'rank=2', '--out', 'x');
    expect(both.status).toBe(2);
    expect(both.stderr).toMatch(/--lora: give --lora \(a fresh adapter\) or --adapter/);
  });
});
