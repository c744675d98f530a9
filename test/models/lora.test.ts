/**
 * LoRA adapters: base + adapter against an independent float64 implementation of LoRA's
 * arithmetic (W + scale·B·A, then the reference forward), PEFT's files both ways, and the
 * refusals of what duel does not implement.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Runtime } from '../../src/engine/index.js';
import { readSafetensors } from '../../src/engine/safetensors.js';
import { rng } from '../../src/models/common/rng.js';
import { generate } from '../../src/models/generate.js';
import { parseLlamaConfig } from '../../src/models/llama/config.js';
import { LogprobRunner } from '../../src/models/llama/logprob-runner.js';
import { DecoderRunner } from '../../src/models/llama/runner.js';
import type { HostTensor } from '../../src/models/llama/weights.js';
import {
  type Adapter,
  initAdapter,
  mergeAdapter,
  readAdapterDir,
  writeAdapterDir,
} from '../../src/models/lora/adapter.js';
import { type LoraConfig, parseAdapterConfig, parseLoraFlag } from '../../src/models/lora/config.js';
import { weights } from '../helpers/model-fixtures.js';
import { refusal } from '../helpers/refusal.js';
import { fileTempDir } from '../helpers/tmp.js';
import { referenceLogits } from './llama-reference.js';

const cfg = parseLlamaConfig({
  model_type: 'llama',
  vocab_size: 13,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  tie_word_embeddings: true,
  pad_token_id: 0,
});
const runtime = new Runtime({ workers: 1, intraOpThreads: 1 });
afterAll(() => runtime.close());
const dir = fileTempDir('duel-lora-');

const base64 = weights(cfg, 5, 'float64', 3);
const f32 = (w: Record<string, HostTensor>) =>
  Object.fromEntries(
    Object.entries(w).map(([k, t]) => [
      k,
      { ...t, dtype: 'float32' as const, data: Float32Array.from(t.data) },
    ]),
  );
const base = f32(base64);

/** An adapter with B ≠ 0 (a fresh one has B = 0 and changes nothing). */
function trainedLike(c: LoraConfig, seed: number, model = cfg): Adapter {
  const a = initAdapter(model, c, seed);
  const next = rng(seed + 100);
  for (const [name, t] of Object.entries(a.tensors))
    if (name.endsWith('lora_B.weight')) t.data = t.data.map(() => (next() - 0.5) * 0.8);
  return a;
}

/** W + scale·B·A in float64, written out again here: the independent arithmetic. */
function mergedByHand(a: Adapter, from = base64): Record<string, HostTensor> {
  const c = a.config;
  const scale = c.rslora ? c.alpha / Math.sqrt(c.rank) : c.alpha / c.rank;
  const out: Record<string, HostTensor> = { ...from };
  for (const name of Object.keys(a.tensors).filter((n) => n.endsWith('.lora_A.weight'))) {
    const module = name.slice(0, -'.lora_A.weight'.length);
    const w = from[`${module}.weight`]!;
    const A = a.tensors[name]!;
    const B = a.tensors[`${module}.lora_B.weight`]!;
    const [o, i] = w.dims as [number, number];
    const data = Float64Array.from(w.data);
    for (let p = 0; p < o; p++)
      for (let q = 0; q < i; q++)
        for (let r = 0; r < c.rank; r++)
          data[p * i + q]! += scale * B.data[p * c.rank + r]! * A.data[r * i + q]!;
    out[`${module}.weight`] = { dtype: 'float64', dims: w.dims, data };
  }
  return out;
}

function referenceLogprob(
  w: Record<string, HostTensor>,
  prompt: number[],
  completion: number[],
  model = cfg,
): number {
  const logits = referenceLogits(model, w, [...prompt, ...completion]);
  return completion.reduce((s, tok, k) => {
    const z = logits[prompt.length + k - 1]!;
    const m = Math.max(...z);
    return s + z[tok]! - m - Math.log(z.reduce((t, v) => t + Math.exp(v - m), 0));
  }, 0);
}

const RECORDS = [
  { promptIds: [1, 2, 3], completionIds: [4, 5, 6] },
  { promptIds: [7], completionIds: [8, 9] },
];

describe('base + adapter', () => {
  it.each([
    ['q_proj+v_proj, alpha/r', parseLoraFlag('rank=4,alpha=8,targets=q_proj+v_proj')],
    ['every layer, rsLoRA', parseLoraFlag('rank=2,alpha=4,targets=all,rslora')],
  ])('%s: log-probs within 1e-4 relative of the merged weights’ float64 reference', async (_n, c) => {
    const adapter = trainedLike(c, 3);
    const runner = await LogprobRunner.create(runtime, cfg, base, adapter);
    const got = await runner.logprobs(RECORDS);
    await runner.release();
    const merged = mergedByHand(adapter);
    const plain = RECORDS.map((r) => referenceLogprob(base64, r.promptIds, r.completionIds));
    RECORDS.forEach((r, i) => {
      const want = referenceLogprob(merged, r.promptIds, r.completionIds);
      expect(Math.abs(got[i]!.summed - want) / Math.abs(want)).toBeLessThan(1e-4);
      // The adapter changes something: this test cannot pass with the adapter ignored.
      expect(Math.abs(want - plain[i]!)).toBeGreaterThan(1e-2);
    });
    // mergeAdapter (what `duel model merge` writes) is the same arithmetic.
    const m = mergeAdapter(base, cfg, adapter);
    for (const [k, t] of Object.entries(merged))
      for (let j = 0; j < t.data.length; j++) expect(m[k]!.data[j]!).toBeCloseTo(t.data[j]!, 5);
  });

  it('decodes with the adapter compiled in as the merged model does, and a fresh adapter changes nothing', async () => {
    const adapter = trainedLike(parseLoraFlag('rank=4,alpha=8,targets=all'), 9);
    const o = { n: 1, maxNewTokens: 5, temperature: 0, topK: 0, topP: 1, seed: 1, eosIds: [], padId: 0 };
    const withAdapter = await DecoderRunner.create(runtime, cfg, base, adapter);
    const merged = await DecoderRunner.create(runtime, cfg, mergeAdapter(base, cfg, adapter));
    const plain = await DecoderRunner.create(runtime, cfg, base);
    const prompts = [
      [1, 2],
      [3, 4, 5],
    ];
    const [a, m, p] = await Promise.all([withAdapter, merged, plain].map((r) => generate(r, prompts, o)));
    expect(a!.map((g) => g.tokens)).toEqual(m!.map((g) => g.tokens));
    expect(a!.map((g) => g.tokens)).not.toEqual(p!.map((g) => g.tokens));
    const fresh = await LogprobRunner.create(runtime, cfg, base, initAdapter(cfg, adapter.config, 1));
    const none = await LogprobRunner.create(runtime, cfg, base);
    const [x, y] = await Promise.all([fresh.logprobs(RECORDS), none.logprobs(RECORDS)]);
    expect(x.map((r) => r.summed)).toEqual(y.map((r) => r.summed));
    await Promise.all([withAdapter, merged, plain].map((r) => r.release()));
    await Promise.all([fresh.release(), none.release()]);
  });
});

describe("PEFT's format", () => {
  it('writes PEFT names, shapes and config, and reads them back unchanged', () => {
    const adapter = trainedLike(parseLoraFlag('rank=4,alpha=16,targets=q_proj+down_proj'), 2);
    const out = join(dir, 'adapter');
    writeAdapterDir(out, adapter, 'duel/base');
    const config = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    expect(config).toMatchObject({
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      r: 4,
      lora_alpha: 16,
      target_modules: ['q_proj', 'down_proj'],
      use_rslora: false,
      bias: 'none',
      base_model_name_or_path: 'duel/base',
    });
    const { tensors } = readSafetensors(join(out, 'adapter_model.safetensors'));
    expect(tensors.get('base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight')!.shape).toEqual([
      4, 16,
    ]);
    expect(tensors.get('base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight')!.shape).toEqual([
      16, 4,
    ]);
    expect(tensors.get('base_model.model.model.layers.0.mlp.down_proj.lora_A.weight')!.shape).toEqual([
      4, 24,
    ]);
    expect(tensors.size).toBe(2 * 2 * 2);
    const back = readAdapterDir(out, cfg);
    expect(back.config).toEqual(adapter.config);
    for (const [k, t] of Object.entries(adapter.tensors)) expect(back.tensors[k]!.data).toEqual(t.data);
  });

  const peft = { peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['q_proj'] };

  it('with the LM head among the targets (an untied head; a tied one is refused by name)', async () => {
    const untied = { ...cfg, tieWordEmbeddings: false };
    const b64 = weights(untied, 6, 'float64', 3);
    const adapter = trainedLike(parseLoraFlag('rank=3,alpha=6,targets=all+lm_head'), 4, untied);
    expect(adapter.config.targets).toContain('lm_head');
    expect(adapter.tensors['lm_head.lora_B.weight']!.dims).toEqual([13, 3]);
    const runner = await LogprobRunner.create(runtime, untied, f32(b64), adapter);
    const got = await runner.logprobs(RECORDS);
    await runner.release();
    const merged = mergedByHand(adapter, b64);
    // The head's own update matters: without it the merged reference differs.
    const noHead = { ...merged, 'lm_head.weight': b64['lm_head.weight']! };
    RECORDS.forEach((r, i) => {
      const want = referenceLogprob(merged, r.promptIds, r.completionIds, untied);
      expect(Math.abs(got[i]!.summed - want) / Math.abs(want)).toBeLessThan(1e-4);
      expect(Math.abs(want - referenceLogprob(noHead, r.promptIds, r.completionIds, untied))).toBeGreaterThan(
        1e-2,
      );
    });
    const m = mergeAdapter(f32(b64), untied, adapter);
    const head = merged['lm_head.weight']!.data;
    for (let j = 0; j < head.length; j++) expect(m['lm_head.weight']!.data[j]!).toBeCloseTo(head[j]!, 5);
    expect(
      refusal(() => initAdapter(cfg, parseLoraFlag('rank=2,alpha=2,targets=lm_head'), 1)).violations,
    ).toEqual([
      {
        field: 'target_modules',
        description: "'lm_head' is tied to embed_tokens in this model; duel adapts an untied lm_head only",
      },
    ]);
  });

  it('refuses by name what duel does not implement', () => {
    const fields = (json: object) =>
      refusal(() => parseAdapterConfig(json, 'a.json')).violations.map((v) => v.field);
    expect(fields({ ...peft, use_dora: true })).toEqual(['a.json: use_dora']);
    expect(fields({ ...peft, bias: 'all' })).toEqual(['a.json: bias']);
    expect(fields({ ...peft, modules_to_save: ['lm_head'] })).toEqual(['a.json: modules_to_save']);
    expect(fields({ ...peft, rank_pattern: { q_proj: 8 } })).toEqual(['a.json: rank_pattern']);
    expect(fields({ ...peft, target_modules: ['q_proj', 'embed_tokens'] })).toEqual([
      'a.json: target_modules',
    ]);
    expect(fields({ ...peft, peft_type: 'IA3' })).toEqual(['a.json: peft_type']);
    expect(
      parseAdapterConfig({ ...peft, target_modules: 'all-linear', lora_dropout: 0.05 }, 'a.json'),
    ).toMatchObject({
      targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
      dropout: 0.05,
    });
  });

  it('refuses an adapter that does not fit the base model, naming the tensor and both shapes', () => {
    const other = parseLlamaConfig({
      model_type: 'llama',
      vocab_size: 13,
      hidden_size: 32,
      intermediate_size: 24,
      num_hidden_layers: 2,
      num_attention_heads: 4,
    });
    const out = join(dir, 'wide');
    writeAdapterDir(out, initAdapter(other, parseLoraFlag('rank=4,alpha=8,targets=q_proj'), 1), 'other');
    const e = refusal(() => readAdapterDir(out, cfg));
    expect(e.violations[0]).toEqual({
      field: 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight',
      description: expect.stringMatching(/has shape \[4,32\], the base model implies \[4,16\]/),
    });
    // A tensor the config's targets do not account for is named too.
    const extra = join(dir, 'extra');
    writeAdapterDir(extra, initAdapter(cfg, parseLoraFlag('rank=4,alpha=8,targets=q_proj+v_proj'), 1), 'b');
    const config = JSON.parse(readFileSync(join(extra, 'adapter_config.json'), 'utf8'));
    writeFileSync(
      join(extra, 'adapter_config.json'),
      JSON.stringify({ ...config, target_modules: ['q_proj'] }),
    );
    expect(refusal(() => readAdapterDir(extra, cfg)).violations.map((v) => v.field)).toContain(
      'base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight',
    );
  });
});

describe('one decoder and one scorer for every adapter of a target set', () => {
  it('decodes and scores each adapter set into its state as runners with that adapter alone do, whatever its rank', async () => {
    const o = { n: 2, maxNewTokens: 5, temperature: 1, topK: 0, topP: 1, seed: 4, eosIds: [], padId: 0 };
    const prompts = [
      [1, 2],
      [3, 4, 5],
    ];
    const a1 = trainedLike(parseLoraFlag('rank=4,alpha=8,targets=q_proj+v_proj'), 5);
    const a2 = trainedLike(parseLoraFlag('rank=2,alpha=2,targets=q_proj+v_proj,rslora'), 6);
    const shared = await DecoderRunner.forAdapters(runtime, cfg, base, ['q_proj', 'v_proj']);
    await shared.setAdapter('a1', a1);
    await shared.setAdapter('a2', a2);
    for (const [key, adapter] of [
      ['a1', a1],
      ['a2', a2],
    ] as const) {
      const compiled = await DecoderRunner.create(runtime, cfg, base, adapter);
      const [got, want] = await Promise.all([
        generate(shared.withAdapter(key), prompts, o),
        generate(compiled, prompts, o),
      ]);
      expect(got.map((g) => g.tokens)).toEqual(want.map((g) => g.tokens));
      for (const [i, g] of got.entries())
        for (const [t, lp] of g.logprobs.entries()) expect(lp).toBeCloseTo(want[i]!.logprobs[t]!, 4);
      await compiled.release();
    }
    // Log-probs likewise: one scorer, both adapters in its state, each as its own scorer gives.
    const scorer = await LogprobRunner.forAdapters(runtime, cfg, base, ['q_proj', 'v_proj']);
    await scorer.setAdapter('a1', a1);
    await scorer.setAdapter('a2', a2);
    for (const [key, adapter] of [
      ['a1', a1],
      ['a2', a2],
    ] as const) {
      const own = await LogprobRunner.create(runtime, cfg, base, adapter);
      const [got, want] = await Promise.all([
        scorer.withAdapter(key).logprobs(RECORDS),
        own.logprobs(RECORDS),
      ]);
      for (const [i, r] of got.entries()) expect(r.summed).toBeCloseTo(want[i]!.summed, 5);
      await own.release();
    }
    await scorer.release();
    await expect(
      shared.setAdapter('a3', trainedLike(parseLoraFlag('rank=2,alpha=2,targets=all'), 7)),
    ).rejects.toThrow(/takes adapters on q_proj,v_proj/);
    await shared.dropAdapter('a1');
    expect(() => shared.withAdapter('a1')).toThrow(/no adapter 'a1'/);
    await shared.release();
  });
});
