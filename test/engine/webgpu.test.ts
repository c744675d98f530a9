/**
 * The webgpu provider (Dawn over Vulkan: Mesa's lavapipe on a machine without a GPU, which
 * `scripts/setup.sh --for-tests` installs) against the cpu provider, on small models: every graph
 * duel runs, in float32, and the state that must stay in device memory between runs.
 */

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readPlacement, runPlacementBench } from '../../bench/placement.js';
import { STACKS } from '../../bench/reference-stack.js';
import { duelJudge, trainJudge } from '../../src/algorithms/train-judge.js';
import { trainRound } from '../../src/algorithms/train-round.js';
import {
  compile,
  fromFloat16,
  Graph,
  Runtime,
  T,
  TrainingState,
  toFloat16,
  type WireTensor,
} from '../../src/engine/index.js';
import { type GenerateOptions, generate } from '../../src/models/generate.js';
import { initJudgeWeights } from '../../src/models/judge/model.js';
import { JudgeRunner } from '../../src/models/judge/runner.js';
import { parseLlamaConfig } from '../../src/models/llama/config.js';
import { LogprobRunner } from '../../src/models/llama/logprob-runner.js';
import { DecoderRunner } from '../../src/models/llama/runner.js';
import type { HostTensor } from '../../src/models/llama/weights.js';
import { initAdapter } from '../../src/models/lora/adapter.js';
import { parseLoraFlag } from '../../src/models/lora/config.js';
import { parsePairRMConfig } from '../../src/models/pairrm/config.js';
import { initPairRMWeights } from '../../src/models/pairrm/model.js';
import { PairRMRunner } from '../../src/models/pairrm/runner.js';
import { parseRewardConfig } from '../../src/models/reward/config.js';
import { initRewardWeights } from '../../src/models/reward/model.js';
import { RewardRunner } from '../../src/models/reward/runner.js';
import { tinyJudgeConfig, weights } from '../helpers/model-fixtures.js';
import { ALGO_OF, ROUND_CONFIG as cfg, HPARAMS, ROUND_RECORDS } from '../helpers/round-fixtures.js';

const cpu = new Runtime({ workers: 1, intraOpThreads: 1 });
const gpu = new Runtime({ workers: 1, intraOpThreads: 1, provider: 'webgpu' });
afterAll(() => Promise.all([cpu.close(), gpu.close()]));

const f32 = (w: Record<string, HostTensor>): Record<string, HostTensor> =>
  Object.fromEntries(
    Object.entries(w).map(([k, t]) => [
      k,
      { ...t, dtype: 'float32' as const, data: Float32Array.from(t.data) },
    ]),
  );
const policy = f32(weights(cfg, 2, 'float64', 5));
const reference = f32(weights(cfg, 3, 'float64', 5));

/** The update w₁ − w₀ of every parameter, as one vector. */
const update = (w1: Record<string, HostTensor>, w0: Record<string, HostTensor>) =>
  Object.entries(w0).flatMap(([k, t]) => Array.from(w1[k]!.data, (x, i) => x - t.data[i]!));

/** Largest difference over the largest magnitude of `want`. */
function relative(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < want.length; i++) {
    diff = Math.max(diff, Math.abs(got[i]! - want[i]!));
    scale = Math.max(scale, Math.abs(want[i]!));
  }
  return diff / scale;
}

describe('the webgpu provider gives the cpu provider’s answers', () => {
  it('tanh near 0, where ONNX Runtime’s WebGPU kernel alone is off by up to 1e-3 relative', async () => {
    const xs = Float32Array.from([1e-5, -3e-5, 1e-4, -1e-3, 0.01, 0.049, 0.05, -0.2, 3]);
    const g = new Graph();
    const x = g.input('x', 'float32', [xs.length]);
    const session = await gpu.load(compile(g, { y: T.tanh(x) }, 'tanh', { provider: 'webgpu' }));
    const { y } = await session.run({ x: { dtype: 'float32', dims: [xs.length], data: xs } }, ['y']);
    await session.release();
    for (const [i, v] of y!.data.entries()) {
      const want = Math.tanh(xs[i]!);
      expect(Math.abs((Number(v) - want) / want)).toBeLessThan(1e-6);
    }
  });

  it('a float16 MatMul, every node on the webgpu provider, within half precision of float64', async () => {
    // What float16 compute stands on: the adapter offers shader-f16 with ONNX Runtime's toggles
    // (lavapipe does), and the provider runs a half-precision graph without falling back.
    const [m, k, n] = [32, 48, 16];
    const draw = (len: number, seed: number) =>
      Float32Array.from({ length: len }, (_, i) => Math.sin(seed * 7.1 + i * 1.37) * 2);
    const a = fromFloat16(toFloat16(draw(m * k, 1)));
    const b = fromFloat16(toFloat16(draw(k * n, 2)));
    const g = new Graph();
    const y = T.matmul(g.input('a', 'float16', [m, k]), g.input('b', 'float16', [k, n]));
    const dir = mkdtempSync(join(tmpdir(), 'duel-f16-'));
    const rt = new Runtime({ workers: 1, provider: 'webgpu', profilePrefix: join(dir, 'profile') });
    try {
      const session = await rt.load(compile(g, { y }, 'matmul_f16', { provider: 'webgpu' }));
      const feeds = {
        a: { dtype: 'float16' as const, dims: [m, k], data: toFloat16(a) },
        b: { dtype: 'float16' as const, dims: [k, n], data: toFloat16(b) },
      };
      const { y: out } = await session.run(feeds, ['y']);
      expect(out!.dtype).toBe('float16');
      const got = fromFloat16(out!.data as Uint16Array);
      let worst = 0;
      for (let i = 0; i < m; i++)
        for (let j = 0; j < n; j++) {
          let want = 0;
          let scale = 0;
          for (let p = 0; p < k; p++) {
            want += a[i * k + p]! * b[p * n + j]!;
            scale += Math.abs(a[i * k + p]! * b[p * n + j]!);
          }
          // Rounding the products' sum to half precision: a few units of 2^-11 of the terms' size.
          worst = Math.max(worst, Math.abs(got[i * n + j]! - want) / scale);
        }
      expect(worst).toBeLessThan(4 * 2 ** -11);
      await rt.endProfiling();
      expect(readPlacement('matmul_f16', dir, 1).nodes).toEqual({ WebGpuExecutionProvider: 1 });
    } finally {
      await rt.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('summed and per-token log-probs, within 1e-4 relative', async () => {
    const records = [
      { promptIds: [1, 2, 3], completionIds: [4, 5] },
      { promptIds: [6], completionIds: [7, 8, 1, 2] },
      { promptIds: [2, 2], completionIds: [3] },
    ];
    const [a, b] = await Promise.all(
      [cpu, gpu].map(async (rt) => {
        const runner = await LogprobRunner.create(rt, cfg, policy);
        const out = await runner.logprobs(records);
        await runner.release();
        return out;
      }),
    );
    expect(
      relative(
        b!.map((r) => r.summed),
        a!.map((r) => r.summed),
      ),
    ).toBeLessThan(1e-4);
    expect(
      relative(
        b!.flatMap((r) => r.perToken),
        a!.flatMap((r) => r.perToken),
      ),
    ).toBeLessThan(1e-4);
  }, 120_000);

  it('seeded samples are identical: greedy, tempered with top-k and top-p, and from a mixture', async () => {
    const base: GenerateOptions = {
      n: 3,
      maxNewTokens: 5,
      temperature: 1,
      topK: 0,
      topP: 1,
      seed: 11,
      eosIds: [],
      padId: 0,
    };
    const cases: Partial<GenerateOptions>[] = [
      { temperature: 0, n: 1 },
      { temperature: 0.8 },
      { temperature: 1.3, topK: 4, topP: 0.9 },
    ];
    const [a, b] = await Promise.all(
      [cpu, gpu].map(async (rt) => {
        const p = await DecoderRunner.create(rt, cfg, policy);
        const r = await DecoderRunner.create(rt, cfg, reference);
        const prompts = [[1, 2, 3], [4], [5, 6]];
        const out = [];
        for (const c of cases) out.push(await generate(p, prompts, { ...base, ...c }));
        out.push(await generate(p, prompts, { ...base, mixture: { reference: r, coef: 0.4 } }));
        await Promise.all([p.release(), r.release()]);
        return out;
      }),
    );
    for (const [i, gens] of a!.entries()) {
      expect(b![i]!.map((g) => g.tokens)).toEqual(gens.map((g) => g.tokens));
      expect(
        relative(
          b![i]!.flatMap((g) => g.logprobs),
          gens.flatMap((g) => g.logprobs),
        ),
      ).toBeLessThan(1e-4);
    }
  }, 120_000);

  it("the judge's K×K preference matrix, within 1e-4 relative", async () => {
    const jcfg = tinyJudgeConfig();
    const jw = initJudgeWeights(jcfg, 4);
    const candidates = [[3, 4], [5], [6, 7, 8], [2]];
    const [a, b] = await Promise.all(
      [cpu, gpu].map(async (rt) => {
        const judge = await JudgeRunner.create(rt, jcfg, jw);
        const prefs = await judge.compare([1, 2], candidates);
        await judge.release();
        return prefs;
      }),
    );
    expect(relative(b!.logits.flat(), a!.logits.flat())).toBeLessThan(1e-4);
    expect(relative(b!.prefs.flat(), a!.prefs.flat())).toBeLessThan(1e-4);
  }, 120_000);

  it('PairRM (DeBERTa-v2) and a Qwen3 reward model judge as on the cpu, within 1e-4 relative', async () => {
    const pcfg = parsePairRMConfig({
      architectures: ['DebertaV2PairRM'],
      model_type: 'deberta-v2',
      vocab_size: 16,
      hidden_size: 16,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      intermediate_size: 32,
      relative_attention: true,
      position_buckets: 4,
      max_relative_positions: 8,
      pos_att_type: 'p2c|c2p',
      share_att_key: true,
      norm_rel_ebd: 'layer_norm',
      position_biased_input: false,
      cls_token_id: 1,
      sep_token_id: 2,
      source_prefix_id: 13,
      cand1_prefix_id: 14,
      cand2_prefix_id: 15,
    });
    const rcfg = parseRewardConfig({
      architectures: ['Qwen3ForSequenceClassification'],
      model_type: 'qwen3',
      vocab_size: 16,
      hidden_size: 16,
      intermediate_size: 32,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      head_dim: 8,
      pad_token_id: 0,
      id2label: { 0: 'LABEL_0' },
    });
    const [pw, rw] = [initPairRMWeights(pcfg, 3), initRewardWeights(rcfg, 3)];
    const candidates = [[3, 4], [5], [6, 7, 8, 9, 10, 11, 12, 3]];
    const [a, b] = await Promise.all(
      [cpu, gpu].map(async (rt) => {
        const pairrm = await PairRMRunner.create(rt, pcfg, pw);
        const rm = await RewardRunner.create(rt, rcfg, rw);
        const out = [await pairrm.compare([1, 2], candidates), await rm.compare([1, 2], candidates)];
        await Promise.all([pairrm.release(), rm.release()]);
        return out;
      }),
    );
    for (const i of [0, 1]) expect(relative(b![i]!.logits.flat(), a![i]!.logits.flat())).toBeLessThan(1e-4);
  }, 120_000);
});

/** One plain-SGD step, so the update is the gradient itself (AdamW's first step is its sign). */
const STEP = { optimizer: { kind: 'sgd' as const }, lr: 1, steps: 1, batchSize: 2, gradClip: 0, seed: 0 };

describe('one step of every recipe updates the weights on webgpu as on cpu (within 1e-3 relative)', () => {
  it.each(Object.keys(HPARAMS))(
    '%s',
    async (name) => {
      const o = {
        ...STEP,
        algo: ALGO_OF[name] ?? name,
        hparams: HPARAMS[name]!,
        config: cfg,
        weights: policy,
        reference,
        records: ROUND_RECORDS,
      };
      const [a, b] = await Promise.all([trainRound(cpu, o), trainRound(gpu, o)]);
      expect(relative(update(b.weights, policy), update(a.weights, policy))).toBeLessThan(1e-3);
      expect(b.metrics.steps).toBe(1);
      expect(b.metrics.loss_first).toBeCloseTo(a.metrics.loss_first, 4);
    },
    120_000,
  );

  it('sppo with a LoRA adapter on every module (a frozen base, many small parameters in one flat update)', async () => {
    const start = initAdapter(cfg, parseLoraFlag('rank=2,alpha=4,targets=all'), 1);
    // B ≠ 0, so that A's gradient is not zero either.
    for (const [name, t] of Object.entries(start.tensors))
      if (name.endsWith('lora_B.weight')) t.data = t.data.map((_, i) => Math.sin(i + 1) / 4);
    const o = {
      ...STEP,
      algo: ALGO_OF.sppo ?? 'sppo',
      hparams: HPARAMS.sppo!,
      config: cfg,
      weights: policy,
      adapter: start,
      records: ROUND_RECORDS,
    };
    const [a, b] = await Promise.all([trainRound(cpu, o), trainRound(gpu, o)]);
    expect(Object.keys(b.weights).sort()).toEqual(Object.keys(start.tensors).sort());
    expect(relative(update(b.weights, start.tensors), update(a.weights, start.tensors))).toBeLessThan(1e-3);
    expect(Math.max(...update(a.weights, start.tensors).map(Math.abs))).toBeGreaterThan(0);
  }, 120_000);

  it('judge training (segment embeddings, a soft label)', async () => {
    const jcfg = { ...tinyJudgeConfig(), segmentEmbeddings: true };
    const w0 = initJudgeWeights(jcfg, 4);
    const pairs = [
      { prompt: [1, 2], chosen: [3, 4], rejected: [5] },
      { prompt: [6], chosen: [7], rejected: [8, 2], label: 0.7 },
    ];
    const o = { ...STEP, judge: duelJudge(jcfg), weights: w0, pairs };
    const [a, b] = await Promise.all([trainJudge(cpu, o), trainJudge(gpu, o)]);
    expect(relative(update(b.weights, w0), update(a.weights, w0))).toBeLessThan(1e-3);
  }, 120_000);
});

describe('state stays in device memory', () => {
  const f32t = (dims: number[], fill: (i: number) => number): WireTensor => ({
    dtype: 'float32',
    dims,
    data: Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, (_, i) => fill(i)),
  });

  it('training: per step only the batch and the scalars cross, and the device holds the same tensors after 200 steps as after one', async () => {
    const program = {
      dtype: 'float32' as const,
      build: (g: import('../../src/engine/index.js').Graph, param: (n: string, s: number[]) => never) => {
        const w = param('w', [16, 16]);
        const b = param('b', [16]);
        const x = g.input('x', 'float32', [8, 16]);
        return T.mean(T.softplus(T.add(T.matmul(x, w), b)));
      },
    };
    const initial = { w: f32t([16, 16], (i) => Math.sin(i) / 4), b: f32t([16], (i) => i / 32) };
    const batch = { x: f32t([8, 16], (i) => Math.cos(i)) };
    const schedule = { kind: 'constant' as const, peakLr: 0.01, warmupSteps: 0, totalSteps: 200 };
    const spec = { optimizer: { kind: 'adamw' as const }, gradClip: 1 };
    const [onCpu, onGpu] = await Promise.all(
      [cpu, gpu].map((rt) => TrainingState.create(rt, program as never, spec, schedule, initial)),
    );
    // Disposed however the checks end: a state left on the device would fail the next test's count.
    try {
      await onGpu!.step(batch);
      const afterOne = await onGpu!.runner.deviceStats();
      // w, b and AdamW's two slots for each: 256 + 16 floats of parameters, twice that of slots.
      expect(afterOne).toEqual({ tensors: 6, bytes: 3 * 272 * 4 });
      for (let i = 1; i < 200; i++) await onGpu!.step(batch);
      for (let i = 0; i < 200; i++) await onCpu!.step(batch);
      expect(await onGpu!.runner.deviceStats()).toEqual(afterOne);
      // In: x (8·16 floats), lr and step (a float each). Out: loss, grad_norm and finite (a float each).
      // And the run writes those three to host memory itself: no run of its own copies one back.
      expect(onGpu!.runner.moved).toEqual({
        toDevice: 200 * (8 * 16 * 4 + 8),
        toHost: 200 * 12,
        readBacks: 0,
      });
      expect(onCpu!.runner.moved).toEqual({ toDevice: 0, toHost: 0, readBacks: 0 });
      const [a, b] = await Promise.all([onCpu!.parameters(), onGpu!.parameters()]);
      expect(relative(b.w!.data as Float32Array, a.w!.data as Float32Array)).toBeLessThan(1e-4);
    } finally {
      await onGpu!.dispose();
      await onCpu!.dispose();
    }
  }, 120_000);

  it('decoding: the bytes that cross per token do not grow with the model (no weights, no cache), and a closed cache is freed', async () => {
    const moved = [];
    for (const [layers, hidden] of [
      [1, 8],
      [3, 32],
    ] as const) {
      const c = parseLlamaConfig({
        model_type: 'llama',
        vocab_size: 11,
        hidden_size: hidden,
        intermediate_size: 2 * hidden,
        num_hidden_layers: layers,
        num_attention_heads: 2,
        tie_word_embeddings: true,
        pad_token_id: 0,
      });
      const runner = await DecoderRunner.create(gpu, c, f32(weights(c, 4, 'float64', 5)));
      await generate(runner, [[1, 2, 3], [4]], {
        n: 2,
        maxNewTokens: 6,
        temperature: 1,
        topK: 0,
        topP: 1,
        seed: 3,
        eosIds: [],
        padId: 0,
      });
      expect(await runner.runner.deviceStats()).toEqual({ tensors: 0, bytes: 0 });
      // The draw's token, log-prob and entropy come back from the step's own run.
      expect(runner.runner.moved.readBacks).toBe(0);
      moved.push({ ...runner.runner.moved });
      await runner.release();
    }
    expect(moved[0]!.toDevice).toBeGreaterThan(0);
    expect(moved[1]).toEqual(moved[0]);
  }, 120_000);
});

describe('placement', () => {
  it('runs every float computation of the hot graphs on the device: the CPU keeps only int64 shape and index arithmetic, the logits never cross, and nothing is copied back mid-step', async () => {
    const r = await runPlacementBench({ provider: 'webgpu', model: 'tiny', runs: 2, log: () => {} });
    expect(r.graphs.map((g) => g.graph)).toEqual([
      'training step (AdamW)',
      'decoding step (KV cache, in-graph draw)',
      'judge K×K comparison',
      'completion log-probs',
    ]);
    const { batch, seq, vocab } = STACKS.tiny!;
    for (const g of r.graphs) {
      // The device runs most of every graph.
      expect(g.nodes.WebGpuExecutionProvider, g.graph).toBeGreaterThan(
        3 * (g.nodes.CPUExecutionProvider ?? 0),
      );
      // Casts of int64 masks and counts to float are the only CPU nodes with a float output.
      expect(
        g.cpu_float_nodes.filter((n) => !n.startsWith('Cast_')),
        g.graph,
      ).toEqual([]);
      expect(g.cpu_ops.LogSoftmax, g.graph).toBeUndefined();
      // Nothing inside a step is copied back to the host, so the device never stops mid-step for
      // the CPU (before: the decoding draw's int64 count, the training step's bool flag).
      expect(g.device_ops.MemcpyToHost, g.graph).toBeUndefined();
      // How long the device was busy in a run, from ONNX Runtime's GPU timestamps.
      expect(g.timeline?.device_busy_ms, g.graph).toBeGreaterThan(0);
      expect(g.copies.bytes_per_run, g.graph).toBeLessThan((batch * seq * vocab * 4) / 4);
    }
  }, 120_000);
});
