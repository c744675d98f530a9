/** Completion log-probs: against the reference forward, prompt and padding masked, gradients checked. */
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { compile, Graph, grad, Runtime, T } from '../../src/engine/index.js';
import { completionBatch } from '../../src/models/batch.js';
import { rng } from '../../src/models/common/rng.js';
import { parseLlamaConfig } from '../../src/models/llama/config.js';
import { LogprobRunner } from '../../src/models/llama/logprob-runner.js';
import { sequenceLogprobs } from '../../src/models/llama/logprobs.js';
import { gradcheck } from '../helpers/gradcheck.js';
import { weights } from '../helpers/model-fixtures.js';
import { referenceLogits } from './llama-reference.js';

const CONFIG = {
  model_type: 'llama',
  vocab_size: 9,
  hidden_size: 8,
  intermediate_size: 12,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  tie_word_embeddings: true,
  pad_token_id: 0,
};
const cfg = parseLlamaConfig(CONFIG);
const runtime = new Runtime({ workers: 1, intraOpThreads: 1 });
afterAll(() => runtime.close());

const RECORDS = [
  { promptIds: [1, 2, 3], completionIds: [4, 5] },
  { promptIds: [6], completionIds: [7, 8, 1, 2] },
  { promptIds: [2, 2], completionIds: [3] },
];

function referenceSum(w: ReturnType<typeof weights>, prompt: number[], completion: number[]): number[] {
  const seq = [...prompt, ...completion];
  const logits = referenceLogits(cfg, w, seq);
  return completion.map((tok, i) => {
    const z = logits[prompt.length + i - 1]!;
    const m = Math.max(...z);
    return z[tok]! - m - Math.log(z.reduce((s, x) => s + Math.exp(x - m), 0));
  });
}

describe('completion log-probs', () => {
  it('sum the completion tokens only, the same in any batch', async () => {
    const w = weights(cfg, 3);
    const w32 = Object.fromEntries(
      Object.entries(w).map(([k, t]) => [
        k,
        { ...t, dtype: 'float32' as const, data: Float32Array.from(t.data) },
      ]),
    );
    const runner = await LogprobRunner.create(runtime, cfg, w32);
    const together = await runner.logprobs(RECORDS);
    const oneByOne = await runner.logprobs(RECORDS, 1);
    RECORDS.forEach((r, i) => {
      const want = referenceSum(w, r.promptIds, r.completionIds);
      expect(together[i]!.perToken).toHaveLength(r.completionIds.length);
      for (const [t, lp] of together[i]!.perToken.entries()) expect(lp).toBeCloseTo(want[t]!, 4);
      expect(together[i]!.summed).toBeCloseTo(
        want.reduce((a, b) => a + b, 0),
        4,
      );
      expect(oneByOne[i]!.summed).toBeCloseTo(together[i]!.summed, 5);
    });
    await runner.release();
  });

  // Checkpointed, the head runs in slices of the vocabulary (4, 4 and 1 rows here): the same
  // log-probs and gradients, the slices' log-sum-exps combined and each target found in its own.
  it.each([
    ['the whole head', {}],
    ['the head in vocabulary slices', { checkpointing: true, headChunk: 4 }],
  ])('has gradients that agree with finite differences (float64, %s)', async (_, head) => {
    // Milder weights than the fixture's: a loss of O(1) keeps central differences above roundoff.
    const w = weights(cfg, 5);
    for (const t of Object.values(w))
      if (t.dims.length === 2) for (let i = 0; i < t.data.length; i++) t.data[i]! /= 4;
    const b = completionBatch(RECORDS, 0, cfg.vocabSize);
    const checked = [
      'model.embed_tokens.weight',
      'model.layers.0.self_attn.k_proj.weight',
      'model.norm.weight',
    ];
    const { maxRelError } = await gradcheck(
      (g, xs) => {
        const lookup = (name: string) => {
          const i = checked.indexOf(name);
          if (i >= 0) return xs[i]!;
          return g.constant(w[name]!.data, 'float64', w[name]!.dims);
        };
        const dims = [b.batch, b.length];
        const { summed } = sequenceLogprobs(cfg, lookup, {
          inputIds: g.constant(b.inputIds, 'int64', dims),
          attentionMask: g.constant(b.attentionMask, 'int64', dims),
          targets: g.constant(b.targets, 'int64', dims),
          targetMask: T.cast(g.constant(b.targetMask, 'float32', dims), 'float64'),
          ...head,
        });
        return summed;
      },
      checked.map((n) => ({ shape: w[n]!.dims })),
      7,
      // k_proj's gradients are ~1e-3 here: a wider step keeps roundoff (~1e-12) below the tolerance.
      1e-5,
    );
    expect(maxRelError).toBeLessThan(1e-6);
  });

  // The head's weights, and with an untied head a LoRA adapter on it, are what a slice reads.
  const untied = parseLlamaConfig({ ...CONFIG, tie_word_embeddings: false });
  const RANK = 2;
  it.each([
    ['a tied head', cfg, []],
    [
      'an untied head with a LoRA adapter',
      untied,
      ['lm_head.weight', 'lm_head.lora_A.weight', 'lm_head.lora_B.weight'],
    ],
  ] as const)('gives the same log-probs and gradients with %s in vocabulary slices', async (_, c, heads) => {
    const w = weights(c, 3);
    const r = rng(11);
    w['lm_head.lora_A.weight'] = {
      dtype: 'float64',
      dims: [RANK, c.hiddenSize],
      data: Float64Array.from({ length: RANK * c.hiddenSize }, () => r() - 0.5),
    };
    w['lm_head.lora_B.weight'] = {
      dtype: 'float64',
      dims: [c.vocabSize, RANK],
      data: Float64Array.from({ length: c.vocabSize * RANK }, () => r() - 0.5),
    };
    const wrt = ['model.embed_tokens.weight', ...heads];
    const b = completionBatch(RECORDS, 0, c.vocabSize);
    const dims = [b.batch, b.length];
    const run = async (head: { checkpointing?: boolean; headChunk?: number }) => {
      const g = new Graph();
      const xs = wrt.map((n) => g.input(n, 'float64', w[n]!.dims));
      const lookup = (name: string) =>
        xs[wrt.indexOf(name)] ?? g.constant(w[name]!.data, 'float64', w[name]!.dims);
      const { perToken, summed } = sequenceLogprobs(c, lookup, {
        inputIds: g.constant(b.inputIds, 'int64', dims),
        attentionMask: g.constant(b.attentionMask, 'int64', dims),
        targets: g.constant(b.targets, 'int64', dims),
        targetMask: T.cast(g.constant(b.targetMask, 'float32', dims), 'float64'),
        ...(heads.length ? { lora: { scale: 0.5, targets: new Set(['lm_head']) } } : {}),
        ...head,
      });
      const grads = grad(T.reduceSum(T.mul(summed, summed)), xs);
      const outputs = { perToken, ...Object.fromEntries(grads.map((t, i) => [`d${i}`, t])) };
      const session = await ort.InferenceSession.create(compile(g, outputs).bytes);
      const feeds = Object.fromEntries(
        wrt.map((n) => [n, new ort.Tensor('float64', Float64Array.from(w[n]!.data), w[n]!.dims)]),
      );
      const out = await session.run(feeds);
      return Object.keys(outputs).map((k) => Array.from(out[k]!.data as Float64Array));
    };
    const [plain, sliced] = [await run({}), await run({ checkpointing: true, headChunk: 4 })];
    expect(sliced).toHaveLength(1 + wrt.length);
    for (const [i, values] of plain.entries()) {
      expect(values.some((v) => v !== 0)).toBe(true);
      for (const [j, v] of values.entries()) expect(sliced[i]![j]!).toBeCloseTo(v, 12);
    }
    // Every target token of the batch lies in one of the three slices, and each slice holds one.
    expect(new Set(Array.from(b.targets, (t) => Math.floor(Number(t) / 4))).size).toBe(3);
  });

  it('names the record and field of a bad token id', () => {
    expect(() => completionBatch([{ promptIds: [1], completionIds: [9] }], 0, 9)).toThrow(
      /records\[0\].completion_ids: token id 9 is outside the vocabulary \[0, 9\)/,
    );
  });
});
