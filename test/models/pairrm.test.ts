/**
 * PairRM natively: duel's DeBERTa-v2 encoder and PairRM head against the independent float64
 * forward of deberta-reference.ts, on PairRM's own settings (share_att_key, p2c|c2p, log buckets,
 * LayerNorm'd relative embeddings, no absolute positions) and on the other branches (separate
 * position projections, c2p only, absolute positions, no buckets); then the input format, the
 * judge it makes, and the refusals.
 */
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { pairrmJudge, trainJudge } from '../../src/algorithms/train-judge.js';
import { compile, Runtime } from '../../src/engine/index.js';
import { rng } from '../../src/models/common/rng.js';
import { logBucket } from '../../src/models/deberta/model.js';
import { loadJudgeDir } from '../../src/models/judge/load.js';
import type { HostTensor } from '../../src/models/llama/weights.js';
import { type PairRMConfig, parsePairRMConfig } from '../../src/models/pairrm/config.js';
import { pairrmBatch, pairrmParams, pairrmSequence } from '../../src/models/pairrm/model.js';
import { PairRMRunner, pairrmFeeds, pairrmGraph, savePairRMDir } from '../../src/models/pairrm/runner.js';
import { refusal } from '../helpers/refusal.js';
import { fileTempDir } from '../helpers/tmp.js';
import { referencePairIds, referencePairRM } from './deberta-reference.js';

const runtime = new Runtime({ workers: 1, intraOpThreads: 1 });
afterAll(() => runtime.close());
const root = fileTempDir('duel-pairrm-');

const base = {
  architectures: ['DebertaV2PairRM'],
  model_type: 'deberta-v2',
  vocab_size: 40,
  hidden_size: 16,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  intermediate_size: 32,
  hidden_act: 'gelu',
  max_position_embeddings: 64,
  type_vocab_size: 0,
  layer_norm_eps: 1e-7,
  pad_token_id: 0,
  n_tasks: 2,
  cls_token_id: 1,
  sep_token_id: 2,
  source_prefix_id: 37,
  cand1_prefix_id: 38,
  cand2_prefix_id: 39,
};

const VARIANTS: [string, PairRMConfig][] = [
  [
    "PairRM's settings: share_att_key, 'p2c|c2p', buckets 8 of max 16, norm_rel_ebd layer_norm",
    parsePairRMConfig({
      ...base,
      relative_attention: true,
      position_buckets: 8,
      max_relative_positions: 16,
      pos_att_type: 'p2c|c2p',
      share_att_key: true,
      norm_rel_ebd: 'layer_norm',
      position_biased_input: false,
    }),
  ],
  [
    'separate position projections, c2p only, no buckets, absolute positions, 3 heads of 4',
    parsePairRMConfig({
      ...base,
      num_attention_heads: 3,
      attention_head_size: 4,
      relative_attention: true,
      max_relative_positions: 6,
      pos_att_type: ['c2p'],
      share_att_key: false,
      norm_rel_ebd: 'none',
      position_biased_input: true,
    }),
  ],
];

/** Weights off their init: norms ≠ 1, biases ≠ 0, matrices large enough that attention is sharp. */
function weightsOf(cfg: PairRMConfig, seed: number): Record<string, HostTensor> {
  const next = rng(seed);
  const normal = () => Math.sqrt(-2 * Math.log(next() + 1e-12)) * Math.cos(2 * Math.PI * next());
  return Object.fromEntries(
    pairrmParams(cfg).map((s) => {
      const n = s.shape.reduce((a, b) => a * b, 1);
      const data = Float64Array.from({ length: n }, () =>
        s.init === 'normal' ? 0.3 * normal() : (s.init === 'ones' ? 1 : 0) + 0.2 * normal(),
      );
      return [s.name, { dtype: 'float64' as const, dims: s.shape, data }];
    }),
  );
}

const f32 = (w: Record<string, HostTensor>) =>
  Object.fromEntries(
    Object.entries(w).map(([k, t]) => [
      k,
      { ...t, dtype: 'float32' as const, data: Float32Array.from(t.data) },
    ]),
  );

// Lengths chosen so the rows of one batch differ (padding) and relative distances pass the buckets.
const PAIRS = [
  { prompt: [5, 6, 7, 8, 9, 10, 11], first: [12, 13, 14], second: [15] },
  { prompt: [20], first: [21, 22, 23, 24, 25, 26, 27, 28], second: [29, 30, 31, 32, 33] },
  { prompt: [3, 4], first: [34], second: [35, 36] },
];

async function logitsOf(cfg: PairRMConfig, w: Record<string, HostTensor>) {
  const { graph, logits, params } = pairrmGraph(cfg);
  const session = await ort.InferenceSession.create(compile(graph, { logits }).bytes);
  const b = pairrmBatch(cfg, PAIRS);
  const feeds: Record<string, ort.Tensor> = {};
  for (const name of params.keys())
    feeds[name] = new ort.Tensor('float32', Float32Array.from(w[name]!.data), w[name]!.dims);
  for (const [name, t] of Object.entries(pairrmFeeds(b, cfg.encoder.relativeAttention)))
    feeds[name] = new ort.Tensor(t.dtype, t.data, t.dims);
  return Array.from((await session.run(feeds)).logits!.data as Float32Array);
}

describe('PairRM (DeBERTa-v2 encoder + head)', () => {
  for (const [name, cfg] of VARIANTS)
    it(`${name}: the ordered-pair logit as the float64 reference computes it (1e-5 relative)`, async () => {
      const w = weightsOf(cfg, 3);
      const got = await logitsOf(cfg, w);
      for (const [i, p] of PAIRS.entries()) {
        const want = referencePairRM(cfg, w, p.prompt, p.first, p.second);
        expect(Math.abs(want)).toBeGreaterThan(1e-2);
        expect(Math.abs(got[i]! - want) / Math.abs(want)).toBeLessThan(1e-5);
      }
    });

  it("builds LLM-Blender's tokenize_pair sequence, truncation lengths included", () => {
    const cfg = parsePairRMConfig({ ...base, source_max_length: 6, candidate_max_length: 4 });
    const p = { prompt: [5, 6, 7, 8, 9, 10], first: [11, 12, 13, 14, 15, 16], second: [17] };
    const { ids, markers } = pairrmSequence(cfg, p);
    expect(ids).toEqual(referencePairIds(cfg, p.prompt, p.first, p.second));
    // [CLS] <src> 5 6 7 [SEP] (6 of 6) · room (14 − 6)/2 = 4: [CLS] <c1> 11 [SEP] · [CLS] <c2> 17 [SEP]
    expect(ids).toEqual([1, 37, 5, 6, 7, 2, 1, 38, 11, 2, 1, 39, 17, 2]);
    expect(markers).toEqual([1, 7, 11]);
  });

  it('log-buckets relative positions as make_log_bucket_position does', () => {
    // bucket_size 8 (mid 4), max_position 16: |δ| ≤ 4 stays, farther ones share log-spaced buckets.
    expect([0, 3, 4, -4].map((d) => logBucket(d, 8, 16))).toEqual([0, 3, 4, -4]);
    expect([5, 6, 8, 12, 15, -15].map((d) => logBucket(d, 8, 16))).toEqual([5, 5, 6, 7, 7, -7]);
  });

  it('is a judge: loads from its directory, antisymmetric preferences, ranked by the full matrix', async () => {
    const cfg = VARIANTS[0]![1];
    savePairRMDir(`${root}/pairrm`, cfg, f32(weightsOf(cfg, 5)));
    const { judge, kind } = await loadJudgeDir(runtime, `${root}/pairrm`);
    expect(kind).toBe('pairwise');
    const { prefs, scores } = await judge.compare([5, 6], [[7, 8], [9], [10, 11, 12]]);
    for (let i = 0; i < 3; i++)
      for (let j = 0; j < 3; j++) expect(prefs[i]![j]! + prefs[j]![i]!).toBeCloseTo(1, 6);
    const ranked = await judge.rank([5, 6], [[7, 8], [9], [10, 11, 12]], 'matrix');
    expect(ranked.best).toBe(scores.indexOf(Math.max(...scores)));
    await judge.release();
  });

  it("trains like duel's own judge (duel train judge): learns a labelled preference it then applies to unseen prompts", async () => {
    const cfg = VARIANTS[0]![1];
    const r = rng(11);
    const word = () => 3 + Math.floor(r() * 30);
    // The truth: more 5s is better than more 6s; prompts are noise.
    const pairs = (n: number) =>
      Array.from({ length: n }, () => {
        const len = 1 + Math.floor(r() * 3);
        return {
          prompt: [word(), word()],
          chosen: Array.from({ length: len }, () => (r() < 0.7 ? 5 : word())),
          rejected: Array.from({ length: len }, () => (r() < 0.7 ? 6 : word())),
        };
      });
    const { weights, metrics } = await trainJudge(runtime, {
      judge: pairrmJudge(cfg),
      weights: f32(weightsOf(cfg, 2)),
      pairs: pairs(48),
      optimizer: { kind: 'adamw' },
      lr: 3e-3,
      epochs: 5,
      batchSize: 16,
      gradClip: 1,
      seed: 0,
    });
    expect(metrics).toMatchObject({ steps: 15, diverged: false });
    expect(metrics.loss_last).toBeLessThan(metrics.loss_first);
    const judge = await PairRMRunner.create(runtime, cfg, weights);
    const held = pairs(30);
    let right = 0;
    for (const p of held)
      if ((await judge.compare(p.prompt, [p.chosen, p.rejected])).prefs[0]![1]! > 0.5) right++;
    expect(right / held.length).toBeGreaterThan(0.8);
    await judge.release();
  }, 60_000);

  it('refuses what it does not implement, by key', () => {
    const fields = (extra: object) =>
      refusal(() => parsePairRMConfig({ ...base, ...extra })).violations.map((v) => v.field);
    expect(fields({ conv_kernel_size: 3 })).toEqual(['conv_kernel_size']);
    expect(fields({ hidden_act: 'gelu_new' })).toEqual(['hidden_act']);
    expect(fields({ pos_att_type: 'p2p|c2p' })).toEqual(['pos_att_type']);
    expect(fields({ embedding_size: 8 })).toEqual(['embedding_size']);
    expect(fields({ cand2_prefix_id: undefined })).toEqual(['cand2_prefix_id']);
  });
});
