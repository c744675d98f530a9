/**
 * Bradley-Terry reward models (`*ForSequenceClassification`) against an independent float64
 * forward: the reference trunk of llama-reference.ts, `score` applied at the token transformers
 * picks (written here from its formula, argmax(arange(T) · (ids ≠ pad))), on Llama, Qwen2, Qwen3
 * and Mistral backbones; then the runner's K-pass comparison, training and the refusals.
 */
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { trainRewardModel } from '../../src/algorithms/train-judge.js';
import { compile, Graph, Runtime, type Tensor } from '../../src/engine/index.js';
import { rng } from '../../src/models/common/rng.js';
import { loadJudgeDir } from '../../src/models/judge/load.js';
import type { HostTensor } from '../../src/models/llama/weights.js';
import { parseRewardConfig, type RewardConfig, toHfRewardConfig } from '../../src/models/reward/config.js';
import { initRewardWeights, rewardBatch, rewardLogits, rewardParams } from '../../src/models/reward/model.js';
import { RewardRunner, saveRewardDir } from '../../src/models/reward/runner.js';
import { fileTempDir } from '../helpers/tmp.js';
import { referenceHidden } from './llama-reference.js';

const runtime = new Runtime({ workers: 1, intraOpThreads: 1 });
afterAll(() => runtime.close());
const root = fileTempDir('duel-reward-');

const configOf = (arch: string, model_type: string, extra: Record<string, unknown> = {}): RewardConfig =>
  parseRewardConfig({
    architectures: [arch],
    model_type,
    vocab_size: 13,
    hidden_size: 16,
    intermediate_size: 24,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    rope_theta: 100,
    pad_token_id: 0,
    id2label: { 0: 'LABEL_0' },
    ...extra,
  });

const VARIANTS: [string, RewardConfig][] = [
  ['Llama', configOf('LlamaForSequenceClassification', 'llama')],
  ['Qwen2 (QKV bias)', configOf('Qwen2ForSequenceClassification', 'qwen2')],
  ['Qwen3 (q/k norm, head_dim 6)', configOf('Qwen3ForSequenceClassification', 'qwen3', { head_dim: 6 })],
  ['Mistral (window 3)', configOf('MistralForSequenceClassification', 'mistral', { sliding_window: 3 })],
];

/** Random weights off their init (norms ≠ 1, biases ≠ 0), float64. */
function weightsOf(cfg: RewardConfig, seed: number): Record<string, HostTensor> {
  const w = initRewardWeights(cfg, seed);
  const next = rng(seed + 7);
  const out: Record<string, HostTensor> = {};
  for (const spec of rewardParams(cfg)) {
    const src = w[spec.name]!.data;
    const data = Float64Array.from(src, (x) =>
      spec.init === 'normal' ? 10 * x : (spec.init === 'ones' ? 1 : 0) + 0.3 * (next() - 0.5),
    );
    out[spec.name] = { dtype: 'float64', dims: spec.shape, data };
  }
  return out;
}

/** transformers' pick, from its source: (arange(T) * (ids != pad)).argmax(-1) (first max). */
function transformersLast(row: number[], pad: number): number {
  const v = row.map((id, t) => (id !== pad ? t : 0));
  return v.indexOf(Math.max(...v));
}

function referenceReward(cfg: RewardConfig, w: Record<string, HostTensor>, row: number[], mask: number[]) {
  const h = referenceHidden(cfg.backbone, w, row, mask)[transformersLast(row, cfg.backbone.padTokenId!)]!;
  return h.reduce((a, x, i) => a + x * w['score.weight']!.data[i]!, 0);
}

async function rewards64(
  cfg: RewardConfig,
  w: Record<string, HostTensor>,
  b: ReturnType<typeof rewardBatch>,
) {
  const g = new Graph();
  const params = new Map<string, Tensor>();
  for (const spec of rewardParams(cfg)) params.set(spec.name, g.input(spec.name, 'float64', spec.shape));
  const rewards = rewardLogits(cfg, (n) => params.get(n)!, {
    inputIds: g.input('input_ids', 'int64', ['B', 'T']),
    attentionMask: g.input('attention_mask', 'int64', ['B', 'T']),
    last: g.input('last', 'int64', ['B']),
  });
  const session = await ort.InferenceSession.create(compile(g, { rewards }).bytes, {
    graphOptimizationLevel: 'basic',
  });
  const feeds: Record<string, ort.Tensor> = {};
  for (const name of params.keys()) feeds[name] = new ort.Tensor('float64', w[name]!.data, w[name]!.dims);
  feeds.input_ids = new ort.Tensor('int64', b.inputIds, [b.n, b.length]);
  feeds.attention_mask = new ort.Tensor('int64', b.attentionMask, [b.n, b.length]);
  feeds.last = new ort.Tensor('int64', b.last, [b.n]);
  return Array.from((await session.run(feeds)).rewards!.data as Float64Array);
}

// The third sequence ends in the pad id itself (an EOS used as pad): transformers scores the token before.
const SEQS = [
  { prompt: [3, 5], completion: [7, 2, 9] },
  { prompt: [4], completion: [8] },
  { prompt: [6, 1, 2], completion: [11, 0] },
];

describe('Bradley-Terry reward models', () => {
  for (const [name, cfg] of VARIANTS)
    it(`${name}: the reward at transformers' last non-pad token, as the reference computes it`, async () => {
      const w = weightsOf(cfg, 3);
      const b = rewardBatch(cfg, SEQS);
      const got = await rewards64(cfg, w, b);
      for (const [i] of SEQS.entries()) {
        const row = Array.from(b.inputIds.subarray(i * b.length, (i + 1) * b.length), Number);
        const mask = Array.from(b.attentionMask.subarray(i * b.length, (i + 1) * b.length), Number);
        const want = referenceReward(cfg, w, row, mask);
        expect(Math.abs(want)).toBeGreaterThan(0.01);
        expect(Math.abs(got[i]! - want) / Math.abs(want)).toBeLessThan(1e-10);
      }
      expect(Number(b.last[2])).toBe(3); // [6, 1, 2, 11, 0]: the trailing 0 is the pad id, so 11 is scored
    });

  it('compares K candidates in K passes: P(i ≻ j) = σ(r_i − r_j), ranked by reward', async () => {
    const cfg = VARIANTS[2]![1];
    const w64 = weightsOf(cfg, 5);
    const w = Object.fromEntries(
      Object.entries(w64).map(([k, t]) => [
        k,
        { ...t, dtype: 'float32' as const, data: Float32Array.from(t.data) },
      ]),
    );
    saveRewardDir(`${root}/rm`, cfg, w);
    const { judge, kind, parameters } = await loadJudgeDir(runtime, `${root}/rm`);
    expect(kind).toBe('reward');
    expect(parameters).toBe(rewardParams(cfg).reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0));
    const prompt = [3, 5];
    const cands = [[7, 2], [8], [9, 9, 4], [10]];
    const r = await (judge as RewardRunner).rewards(cands.map((completion) => ({ prompt, completion })));
    for (const [i, c] of cands.entries()) {
      const b = rewardBatch(cfg, [{ prompt, completion: c }]);
      const want = referenceReward(
        cfg,
        w64,
        Array.from(b.inputIds, Number),
        Array.from(b.attentionMask, Number),
      );
      expect(r[i]!).toBeCloseTo(want, 3);
    }
    const { prefs } = await judge.compare(prompt, cands);
    for (let i = 0; i < 4; i++)
      for (let j = 0; j < 4; j++)
        expect(prefs[i]![j]!).toBeCloseTo(i === j ? 0.5 : 1 / (1 + Math.exp(-(r[i]! - r[j]!))), 5);
    const ranked = await judge.rank(prompt, cands, 'matrix');
    expect(ranked.order).toEqual([...r.keys()].sort((a, b) => r[b]! - r[a]!));
    expect(ranked.judged).toBe(4);
    await judge.release();
  });

  it('reads its config as transformers writes it and refuses what is not a scalar reward, by key', () => {
    const cfg = VARIANTS[2]![1];
    expect(parseRewardConfig(toHfRewardConfig(cfg))).toEqual(cfg);
    expect(() => configOf('Qwen3ForSequenceClassification', 'qwen3', { id2label: undefined })).toThrow(
      /id2label.*2 labels/,
    );
    expect(() => configOf('Qwen3ForSequenceClassification', 'llama')).toThrow(
      /model_type.*'qwen3', not 'llama'/,
    );
    expect(() => configOf('GPT2ForSequenceClassification', 'gpt2')).toThrow(
      /architectures.*GPT2ForSequenceClassification/,
    );
  });

  it('trains with the Bradley-Terry loss until the chosen completions out-score the rejected ones', async () => {
    const cfg = VARIANTS[0]![1];
    const r = rng(1);
    const word = () => 1 + Math.floor(r() * 12);
    // The truth: completions with more 3s are better; prompts are noise.
    const pairs = (n: number) =>
      Array.from({ length: n }, () => {
        const len = 1 + Math.floor(r() * 3);
        return {
          prompt: [word(), word()],
          chosen: Array.from({ length: len }, () => (r() < 0.7 ? 3 : word())),
          rejected: Array.from({ length: len }, () => (r() < 0.7 ? 4 : word())),
        };
      });
    const { weights, metrics } = await trainRewardModel(runtime, {
      config: cfg,
      weights: initRewardWeights(cfg, 1),
      pairs: pairs(64),
      optimizer: { kind: 'adamw' },
      lr: 3e-3,
      epochs: 6,
      batchSize: 16,
      gradClip: 1,
      seed: 0,
    });
    expect(metrics).toMatchObject({ steps: 24, diverged: false });
    expect(metrics.loss_last).toBeLessThan(metrics.loss_first);
    const rm = await RewardRunner.create(runtime, cfg, weights);
    const held = pairs(40);
    const chosen = await rm.rewards(held.map((p) => ({ prompt: p.prompt, completion: p.chosen })));
    const rejected = await rm.rewards(held.map((p) => ({ prompt: p.prompt, completion: p.rejected })));
    expect(chosen.filter((c, i) => c > rejected[i]!).length / held.length).toBeGreaterThan(0.9);
    await rm.release();
  });
});
