/**
 * Training in float16 (a runtime whose dtype is float16): float32 master weights cast to half for
 * the forward and backward passes, the log-softmax and the update in float32, the loss scaled
 * dynamically. Against float32 on the webgpu provider (lavapipe offers shader-f16) and the cpu
 * provider, with realistically scaled weights (N(0, 0.02), as published models are initialised).
 *
 * The bounds. Half's unit roundoff is 2⁻¹¹ ≈ 4.9e-4, and the decoder's logits in half are within
 * 6e-3 of their largest magnitude (test/models/float16.test.ts). Here:
 * - per-token log-probs: measured 3e-4 (cpu) and 6e-4 nats (webgpu); the bound, 5e-3 nats, is eight
 *   times the larger, and far below a wrong cast (a log-softmax in half moves them by 1e-2 and more);
 * - one SGD step's update, every gradient rounded in half on its way back through three layers:
 *   measured 1.0e-3 (cpu) and 6.5e-3 (webgpu, whose fused kernels take casts around them) of its
 *   largest entry for full weights, 1.1e-3 and 3.6e-3 for a LoRA adapter; bound 1e-2 (20 units of
 *   half's roundoff), far below a gradient lost or doubled (a missed unscaling is 2¹⁶ off);
 * - learning: 30 AdamW steps bring SPPO's objective over the records from 0.031 to 0.013 in both
 *   precisions. AdamW turns the rounding of small gradients into full-size steps, so the runs
 *   drift apart: float16 ends 2e-4 (cpu) and 1.2e-3 (webgpu) from float32. The scale to judge
 *   that by is float32 itself on another order of the same batches: 5e-3 away. The bound is half
 *   of that distance. (At a learning rate that oscillates, 1e-3, every two runs end far apart:
 *   such a run tests nothing.)
 */
import { afterAll, describe, expect, it } from 'vitest';
import { winRates } from '../../src/algorithms/estimators.js';
import type { RoundRecord } from '../../src/algorithms/recipes/index.js';
import type { LoopSettings } from '../../src/algorithms/steps.js';
import { type TrainRoundOptions, trainRound } from '../../src/algorithms/train-round.js';
import { Runtime } from '../../src/engine/index.js';
import { rng } from '../../src/models/common/rng.js';
import { parseLlamaConfig } from '../../src/models/llama/config.js';
import { LogprobRunner } from '../../src/models/llama/logprob-runner.js';
import { type HostTensor, initLlamaWeights } from '../../src/models/llama/weights.js';
import { initAdapter } from '../../src/models/lora/adapter.js';
import { parseLoraFlag } from '../../src/models/lora/config.js';
import { HALF_TEST_LLAMA, maxRelativeDiff } from '../helpers/model-fixtures.js';

const CFG = parseLlamaConfig(HALF_TEST_LLAMA);

const f32 = new Runtime({ workers: 1, intraOpThreads: 1 });
const runtimes = {
  cpu: { full: f32, half: new Runtime({ workers: 1, intraOpThreads: 1, dtype: 'float16' }) },
  webgpu: {
    full: new Runtime({ workers: 1, intraOpThreads: 1, provider: 'webgpu' }),
    half: new Runtime({ workers: 1, intraOpThreads: 1, provider: 'webgpu', dtype: 'float16' }),
  },
};
afterAll(() => Promise.all(Object.values(runtimes).flatMap((r) => [r.full.close(), r.half.close()])));

/** Records of K completions with a random valid preference matrix each. */
function records(n: number, k: number, seed: number): RoundRecord[] {
  const next = rng(seed);
  const tokens = (len: number) => Array.from({ length: len }, () => 1 + Math.floor(next() * 95));
  return Array.from({ length: n }, () => {
    const prefs = Array.from({ length: k }, () => new Array<number>(k).fill(0.5));
    for (let a = 0; a < k; a++)
      for (let b = a + 1; b < k; b++) {
        prefs[a]![b] = next();
        prefs[b]![a] = 1 - prefs[a]![b]!;
      }
    return {
      prompt_ids: tokens(2 + Math.floor(next() * 4)),
      completion_ids: Array.from({ length: k }, () => tokens(2 + Math.floor(next() * 6))),
      prefs,
    };
  });
}

const W0 = initLlamaWeights(CFG, 7, 'float32');
const RECORDS = records(8, 3, 11);

/** The largest difference of the updates (after − before) over the largest float32 update. */
function updateDiff(
  before: Record<string, HostTensor>,
  half: Record<string, HostTensor>,
  full: Record<string, HostTensor>,
): number {
  const delta = (w: Record<string, HostTensor>) =>
    Object.fromEntries(
      Object.entries(w).map(([k, t]) => [
        k,
        { data: Float64Array.from(t.data as Float32Array, (x, i) => x - before[k]!.data[i]!) },
      ]),
    );
  return maxRelativeDiff(delta(half), delta(full));
}

/** Every completion of the records, in order. */
const ROWS = RECORDS.flatMap((r) =>
  r.completion_ids.map((c) => ({ promptIds: r.prompt_ids, completionIds: c })),
);

/** Summed log-probs of every completion under `w`, computed in `dtype` on `runtime`. */
async function logprobs(runtime: Runtime, w: Record<string, HostTensor>, dtype: 'float32' | 'float16') {
  const runner = await LogprobRunner.create(runtime, CFG, w, undefined, { dtype });
  try {
    return await runner.logprobs(ROWS);
  } finally {
    await runner.release();
  }
}

/**
 * SPPO's objective over all records, computed in float32: the mean of (ℓ − η(P(y wins) − ½))²
 * with ℓ = log π(y) − log π₀(y). Training drives it down from mean (η(P − ½))².
 */
async function sppoObjective(w: Record<string, HostTensor>, eta: number): Promise<number> {
  const [now, start] = [await logprobs(f32, w, 'float32'), await logprobs(f32, W0, 'float32')];
  const targets = RECORDS.flatMap((r) => winRates(r.prefs).map((p) => eta * (p - 0.5)));
  return (
    targets.reduce((sum, t, i) => sum + (now[i]!.summed - start[i]!.summed - t) ** 2, 0) / targets.length
  );
}

const sppoRound = (
  runtime: Runtime,
  loop: Omit<LoopSettings, 'seed' | 'gradClip'> &
    Partial<Pick<TrainRoundOptions, 'seed' | 'gradClip' | 'adapter' | 'lossScale'>>,
) =>
  trainRound(runtime, {
    algo: 'sppo',
    hparams: { eta: 2 },
    config: CFG,
    weights: W0,
    records: RECORDS,
    gradClip: 0,
    seed: 0,
    ...loop,
  });

describe.each(Object.entries(runtimes))('float16 training on the %s provider', (_name, rt) => {
  it('log-probs: within 5e-3 nats of float32 per token', async () => {
    const [full, half] = [await logprobs(rt.full, W0, 'float32'), await logprobs(rt.full, W0, 'float16')];
    const diffs = full.flatMap((r, i) => r.perToken.map((x, j) => Math.abs(x - half[i]!.perToken[j]!)));
    expect(Math.max(...diffs)).toBeLessThan(5e-3);
    expect(Math.max(...diffs)).toBeGreaterThan(0); // it did compute in half
  });

  it('one SGD step: float32’s update within 1e-2 of its largest entry, at float32’s loss', async () => {
    const sgd = { optimizer: { kind: 'sgd' as const }, lr: 1, steps: 1, batchSize: 8 };
    const [full, half] = [await sppoRound(rt.full, sgd), await sppoRound(rt.half, sgd)];
    expect(half.metrics).toMatchObject({
      steps: 1,
      skipped_steps: 0,
      overflow_steps: 0,
      loss_scale: 2 ** 16,
    });
    expect(full.metrics.loss_scale).toBeUndefined();
    expect(half.metrics.loss_first).toBeCloseTo(full.metrics.loss_first, 3);
    const diff = updateDiff(W0, half.weights, full.weights);
    expect(diff).toBeLessThan(1e-2);
    expect(diff).toBeGreaterThan(0);
  });

  it('a round of AdamW steps learns as in float32', async () => {
    const adamw = { optimizer: { kind: 'adamw' as const }, lr: 3e-4, steps: 30, batchSize: 4, gradClip: 1 };
    // Started where nothing overflows, the two runs take the same steps on the same batches; at
    // GradScaler's 2¹⁶ the first step overflows, and the run's batches are one step out of phase.
    const [full, half, halfDefault] = [
      await sppoRound(rt.full, adamw),
      await sppoRound(rt.half, { ...adamw, lossScale: { init: 2 ** 12 } }),
      await sppoRound(rt.half, adamw),
    ];
    const [j0, j32, j16, j16Default] = [
      await sppoObjective(W0, 2),
      await sppoObjective(full.weights, 2),
      await sppoObjective(half.weights, 2),
      await sppoObjective(halfDefault.weights, 2),
    ];
    // How far float32 lands from itself when only the batches' order changes: the scale on
    // which two runs count as learning alike.
    const reordered = await sppoObjective((await sppoRound(rt.full, { ...adamw, seed: 1 })).weights, 2);
    expect(j32).toBeLessThan(j0 / 2);
    expect(half.metrics).toMatchObject({ overflow_steps: 0, diverged: false });
    expect(Math.abs(j16 - j32)).toBeLessThan(Math.abs(reordered - j32) / 2);
    expect(halfDefault.metrics).toMatchObject({ overflow_steps: 1, loss_scale: 2 ** 15, diverged: false });
    expect(j16Default).toBeLessThan(j0 / 2);
  });

  it('a LoRA round: float32’s adapter update within 1e-2 of its largest entry', async () => {
    // Part-way through training: B ≠ 0 (small, as a trained adapter's is), or ∂L/∂A would be 0.
    const adapter = initAdapter(CFG, parseLoraFlag('rank=4,alpha=8,targets=all'), 3);
    const next = rng(5);
    for (const [name, t] of Object.entries(adapter.tensors))
      if (name.endsWith('lora_B.weight')) t.data = t.data.map(() => 0.02 * (next() - 0.5));
    const sgd = { optimizer: { kind: 'sgd' as const }, lr: 1, steps: 1, batchSize: 8, adapter };
    const [full, half] = [await sppoRound(rt.full, sgd), await sppoRound(rt.half, sgd)];
    expect(half.metrics).toMatchObject({ steps: 1, skipped_steps: 0, overflow_steps: 0 });
    const diff = updateDiff(adapter.tensors, half.adapter!.tensors, full.adapter!.tensors);
    expect(diff).toBeLessThan(1e-2);
    expect(diff).toBeGreaterThan(0); // it did compute in half
  });
});
