/**
 * Decoding and the judges (duel's, PairRM's DeBERTa, a reward model) in float16 (Runtime.dtype)
 * against float32, on the webgpu provider (lavapipe offers shader-f16) and the cpu provider, with realistically scaled weights (initLlamaWeights: N(0,
 * 0.02), as the published models are initialised and stay near).
 *
 * The bounds: half precision's unit roundoff is 2⁻¹¹ ≈ 4.9e-4. Rounding the weights alone moves
 * these models' logits by ≈ 3e-4 of their largest magnitude (measured: the float32 graph on
 * weights rounded to half); the activations and the cache rounded at every layer add a few units
 * more (measured 3e-4–1e-3 on cpu, 7e-4–2e-3 on lavapipe's webgpu, whose fused kernels take
 * casts around them). 6e-3 (12 units) holds that with room for another GPU's kernels, and is far
 * below what a wrong constant does (a float16 scalar stored as its truncated integer, the bug
 * these tests found, put logits off by 0.4–0.8 of their magnitude). Greedy decoding must pick
 * float32's tokens, and the log-probs it reports must be within 0.01 nats of float32's.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { SMALL_PAIRRM_JSON } from '../../bench/judge.js';
import { Runtime } from '../../src/engine/index.js';
import { type GenerateOptions, generate } from '../../src/models/generate.js';
import { parseJudgeConfig } from '../../src/models/judge/config.js';
import { initJudgeWeights } from '../../src/models/judge/model.js';
import { JudgeRunner } from '../../src/models/judge/runner.js';
import { type LlamaConfig, parseLlamaConfig } from '../../src/models/llama/config.js';
import { DecoderRunner } from '../../src/models/llama/runner.js';
import { type HostTensor, initLlamaWeights } from '../../src/models/llama/weights.js';
import { type Adapter, initAdapter } from '../../src/models/lora/adapter.js';
import { parseLoraFlag } from '../../src/models/lora/config.js';
import { parsePairRMConfig } from '../../src/models/pairrm/config.js';
import { initPairRMWeights } from '../../src/models/pairrm/model.js';
import { PairRMRunner } from '../../src/models/pairrm/runner.js';
import { parseRewardConfig } from '../../src/models/reward/config.js';
import { initRewardWeights } from '../../src/models/reward/model.js';
import { RewardRunner } from '../../src/models/reward/runner.js';
import { HALF_TEST_LLAMA, maxRelativeDiff } from '../helpers/model-fixtures.js';

const cpu = new Runtime({ workers: 1, intraOpThreads: 1 });
const runtimes = {
  webgpu: new Runtime({ workers: 1, intraOpThreads: 1, provider: 'webgpu', dtype: 'float16' }),
  cpu: new Runtime({ workers: 1, intraOpThreads: 1, dtype: 'float16' }),
};
const gpu32 = new Runtime({ workers: 1, intraOpThreads: 1, provider: 'webgpu' });
afterAll(() => Promise.all([cpu, gpu32, ...Object.values(runtimes)].map((r) => r.close())));

/** A Qwen3 shape: per-head q/k norms, tied embeddings. */
const QWEN3 = {
  model_type: 'qwen3',
  vocab_size: 96,
  hidden_size: 64,
  intermediate_size: 96,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 16,
  max_position_embeddings: 64,
  tie_word_embeddings: true,
  pad_token_id: 0,
};

/** Llama with grouped-query attention and an untied head; Qwen3 with per-head q/k norms and tied embeddings. */
const CONFIGS: Record<string, LlamaConfig> = {
  llama: parseLlamaConfig(HALF_TEST_LLAMA),
  qwen3: parseLlamaConfig(QWEN3),
};

const GREEDY: GenerateOptions = {
  n: 1,
  temperature: 0,
  topK: 0,
  topP: 1,
  maxNewTokens: 8,
  seed: 1,
  eosIds: [],
  padId: 0,
};
const PROMPTS = [[5, 17, 33, 2], [40], [7, 7, 9]];

/** Largest difference over the largest magnitude of `want`. */
const relative = (got: ArrayLike<number>, want: ArrayLike<number>) =>
  maxRelativeDiff({ x: { data: got } }, { x: { data: want } });

/** A prompt step (rows of unequal length, left-padded) and a step after it: each row's last logits. */
async function twoSteps(runner: DecoderRunner): Promise<Float32Array[]> {
  const cache = await runner.openCache(2);
  try {
    const first = await cache.step(
      [
        [3, 9, 27, 81 % 96],
        [0, 0, 11, 12],
      ],
      [
        [1, 1, 1, 1],
        [0, 0, 1, 1],
      ],
      [
        [0, 1, 2, 3],
        [0, 0, 0, 1],
      ],
    );
    const second = await cache.step(
      [[50], [60]],
      [
        [1, 1, 1, 1, 1],
        [0, 0, 1, 1, 1],
      ],
      [[4], [2]],
    );
    return [first, second];
  } finally {
    await cache.close();
  }
}

async function decodeWith(rt: Runtime, cfg: LlamaConfig, w: Record<string, HostTensor>, adapter?: Adapter) {
  const runner = await DecoderRunner.create(rt, cfg, w, adapter);
  try {
    return {
      dtype: runner.dtype,
      steps: await twoSteps(runner),
      greedy: await generate(runner, PROMPTS, GREEDY),
    };
  } finally {
    await runner.release();
  }
}

describe.each(Object.entries(runtimes))('float16 decoding on the %s provider', (_name, half) => {
  it.each(Object.entries(CONFIGS))(
    '%s: float32’s logits within 12 units of half’s roundoff, and its greedy tokens',
    async (_c, cfg) => {
      const w = initLlamaWeights(cfg, 3);
      const [want, got] = await Promise.all([decodeWith(cpu, cfg, w), decodeWith(half, cfg, w)]);
      expect(got.dtype).toBe('float16');
      for (const [i, logits] of got.steps.entries())
        expect(relative(logits, want.steps[i]!)).toBeLessThan(6e-3);
      expect(got.greedy.map((g) => g.tokens)).toEqual(want.greedy.map((g) => g.tokens));
      for (const [i, g] of got.greedy.entries())
        for (const [t, lp] of g.logprobs.entries())
          expect(Math.abs(lp - want.greedy[i]!.logprobs[t]!)).toBeLessThan(0.01);
    },
  );

  it('a LoRA adapter, as inputs of one graph for every adapter (forAdapters), decodes in float16 too', async () => {
    const cfg = CONFIGS.llama!;
    const w = initLlamaWeights(cfg, 4);
    const adapter = initAdapter(cfg, parseLoraFlag('rank=4,alpha=8,targets=all'), 5);
    // A trained adapter's B is not zero (PEFT starts it at zero: it would change nothing).
    for (const [name, t] of Object.entries(adapter.tensors))
      if (name.endsWith('lora_B.weight')) t.data = t.data.map((_, i) => Math.sin(i) / 20);
    const [want, got] = await Promise.all([
      decodeWith(cpu, cfg, w, adapter),
      decodeWith(half, cfg, w, adapter),
    ]);
    const plain = await decodeWith(cpu, cfg, w);
    expect(relative(want.steps[1]!, plain.steps[1]!)).toBeGreaterThan(1e-2); // the adapter matters
    for (const [i, logits] of got.steps.entries())
      expect(relative(logits, want.steps[i]!)).toBeLessThan(6e-3);
    expect(got.greedy.map((g) => g.tokens)).toEqual(want.greedy.map((g) => g.tokens));
  });
});

describe('what float16 keeps in device memory', () => {
  it('a decoding cache of half the bytes on the webgpu provider; a decoder reading float32 state stays float32', async () => {
    const cfg = CONFIGS.llama!;
    const w = initLlamaWeights(cfg, 6);
    const cacheBytes = async (rt: Runtime) => {
      const runner = await DecoderRunner.create(rt, cfg, w);
      const cache = await runner.openCache(2);
      await cache.step(
        [
          [1, 2, 3],
          [4, 5, 6],
        ],
        [
          [1, 1, 1],
          [1, 1, 1],
        ],
        [
          [0, 1, 2],
          [0, 1, 2],
        ],
      );
      const { bytes } = await runner.runner.deviceStats();
      await runner.release();
      return bytes;
    };
    const [full, half] = [await cacheBytes(gpu32), await cacheBytes(runtimes.webgpu)];
    // 2 rows × 3 positions × kv heads × head_dim × (key, value) × layers, 4 or 2 bytes each.
    const values = 2 * 3 * cfg.numKvHeads * cfg.headDim * 2 * cfg.numLayers;
    expect(full).toBe(values * 4);
    expect(half).toBe(values * 2);
  });
});

describe.each(Object.entries(runtimes))('the judges in float16 on the %s provider', (_name, half) => {
  // Its head, scaled up for preferences away from 0.5, amplifies the trunk's rounding: the pair
  // logits measured 1.6e-3 (cpu) and 7.2e-3 (lavapipe's fused kernels) of the largest one off
  // float32's, the preferences at most 0.010 off. Bounds: 1.5e-2 of the largest logit, and 0.02.
  it('gives float32’s pair logits within 1.5e-2 of the largest, its preferences within 0.02 and its best candidate', async () => {
    const cfg = parseJudgeConfig({
      model_type: 'duel_pairrm',
      encoder: { ...HALF_TEST_LLAMA, num_hidden_layers: 2 },
      source_token_id: 93,
      candidate1_token_id: 94,
      candidate2_token_id: 95,
      segment_embeddings: true,
    });
    const w = initJudgeWeights(cfg, 7);
    // A trained judge's head is not at its initial scale: these give preferences away from 0.5.
    for (const [name, t] of Object.entries(w))
      if (name.startsWith('head.')) t.data = t.data.map((x) => x * 40);
    const prompt = [3, 1, 4, 1, 5];
    const candidates = [
      [9, 2, 6],
      [5, 3],
      [5, 8, 9, 7],
      [9, 3, 2, 3, 8],
    ];
    const judge = async (rt: Runtime) => {
      const runner = await JudgeRunner.create(rt, cfg, w);
      try {
        return await runner.compare(prompt, candidates);
      } finally {
        await runner.release();
      }
    };
    const [want, got] = [await judge(cpu), await judge(half)];
    const spread = Math.max(...want.prefs.flat().map((p) => Math.abs(p - 0.5)));
    expect(spread).toBeGreaterThan(0.1); // preferences a wrong judge could get wrong
    expect(relative(got.logits.flat(), want.logits.flat())).toBeLessThan(1.5e-2);
    for (const [i, row] of got.prefs.entries())
      for (const [j, p] of row.entries()) expect(Math.abs(p - want.prefs[i]![j]!)).toBeLessThan(0.02);
    const best = (s: number[]) => s.indexOf(Math.max(...s));
    expect(best(got.scores)).toBe(best(want.scores));
  });

  it('PairRM’s DeBERTa: float32’s ordered-pair logits within 1.5e-2 of the largest', async () => {
    // PairRM-large's layout at realistic proportions (4 heads of 16, two layers). Measured: 8e-4
    // (cpu) and 5.5e-3 (webgpu) of the largest logit off float32's; the judge's bound.
    const cfg = parsePairRMConfig({
      ...SMALL_PAIRRM_JSON,
      hidden_size: 64,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      intermediate_size: 128,
    });
    const w = initPairRMWeights(cfg, 9);
    // A trained head is not at its initial scale: these give logits of a few units.
    const last = w['head_layer.4.weight']!;
    last.data = last.data.map((x) => x * 200);
    const candidates = [
      [9, 2, 6],
      [5, 3],
      [5, 8, 9, 7],
      [9, 3, 2, 3, 8],
    ];
    const pairs = candidates.flatMap((first, i) =>
      candidates.filter((_, j) => j !== i).map((second) => ({ prompt: [3, 1, 4, 1, 5], first, second })),
    );
    const logits = async (rt: Runtime) => {
      const runner = await PairRMRunner.create(rt, cfg, w);
      try {
        return await runner.pairLogits(pairs);
      } finally {
        await runner.release();
      }
    };
    const [want, got] = [await logits(cpu), await logits(half)];
    expect(Math.max(...want.map(Math.abs))).toBeGreaterThan(1);
    expect(relative(got, want)).toBeLessThan(1.5e-2);
    expect(relative(got, want)).toBeGreaterThan(0); // it did compute in half
  });

  it('a Bradley-Terry reward model: float32’s rewards within 6e-3 of the largest, and its ranking', async () => {
    const cfg = parseRewardConfig({
      ...QWEN3,
      architectures: ['Qwen3ForSequenceClassification'],
      id2label: { 0: 'LABEL_0' },
    });
    const w = initRewardWeights(cfg, 8);
    // A trained score head is not at its initial scale: these rewards differ by more than rounding.
    w['score.weight']!.data = w['score.weight']!.data.map((x) => x * 50);
    const seqs = [
      [1, 5, 9],
      [2, 6],
      [5, 3, 5, 8],
      [9, 7],
    ].map((completion) => ({
      prompt: [3, 1, 4],
      completion,
    }));
    const rewards = async (rt: Runtime) => {
      const runner = await RewardRunner.create(rt, cfg, w);
      try {
        return await runner.rewards(seqs);
      } finally {
        await runner.release();
      }
    };
    const [want, got] = [await rewards(cpu), await rewards(half)];
    expect(Math.max(...want) - Math.min(...want)).toBeGreaterThan(0.05);
    expect(relative(got, want)).toBeLessThan(6e-3);
    const order = (r: number[]) => r.map((_, i) => i).sort((a, b) => r[b]! - r[a]!);
    expect(order(got)).toEqual(order(want));
  });
});
