/**
 * Dynamic loss scaling (TrainingStateOptions.lossScale) on a program whose backward pass runs in
 * float16 over float32 parameters: Σ ½·a·p² + b·p computed in half, so ∂/∂p = a·p + b. Its values
 * are small enough that no partial derivative reaches half's largest value (65 504) under a scale
 * of 2¹⁵; from 2¹⁶ on the scale itself, the backward pass's seed, does not fit in half. (Where to
 * overflow is chosen so: ONNX Runtime's cpu provider runs some half nodes in float32 between casts,
 * so only an overflow at a cast is the same on every provider.)
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { Graph, Tensor } from '../../src/engine/graph.js';
import { LossScaler } from '../../src/engine/loss-scale.js';
import * as T from '../../src/engine/ops/index.js';
import { Runtime } from '../../src/engine/runtime/runtime.js';
import { TrainingState, type TrainingStateOptions } from '../../src/engine/train-state.js';

const A = [1, 2, 0.5, 3];
const B = [0.3, -1, 0.5, 0.1];
const P0 = [0.5, -0.25, 0.25, 0.125];
const f32 = (xs: number[]) => ({ dtype: 'float32' as const, dims: [xs.length], data: Float32Array.from(xs) });
const batch = { a: f32(A), b: f32(B) };

const runtime = new Runtime({ workers: 1, intraOpThreads: 1 });
afterAll(() => runtime.close());

const halfProgram = {
  dtype: 'float32' as const,
  build: (g: Graph, param: (n: string, s: number[]) => Tensor) => {
    const half = (t: Tensor) => T.cast(t, 'float16');
    const p = half(param('p', [4]));
    const [a, b] = [half(g.input('a', 'float32', [4])), half(g.input('b', 'float32', [4]))];
    return T.cast(T.reduceSum(T.add(T.mul(T.mul(a, T.mul(p, p)), 0.5), T.mul(b, p))), 'float32');
  },
};

const sgd = { optimizer: { kind: 'sgd' as const }, gradClip: 0 };
const constant = { kind: 'constant' as const, peakLr: 0.01, warmupSteps: 0, totalSteps: 100 };
const create = (options: TrainingStateOptions) =>
  TrainingState.create(runtime, halfProgram, sgd, constant, { p: f32(P0) }, options);
const params = async (s: TrainingState) => [...((await s.parameters()).p!.data as Float32Array)];

describe('dynamic loss scaling', () => {
  it('skips the steps whose scaled gradient overflows half, halving the scale, then applies the gradient itself', async () => {
    const scaled = await create({ lossScale: { init: 2 ** 20 } });
    const plain = await create({});
    const seen = [];
    for (let i = 0; i < 8; i++) seen.push(await scaled.step(batch));
    expect(seen.map((m) => m.lossScale)).toEqual([20, 19, 18, 17, 16, 15, 15, 15].map((e) => 2 ** e));
    expect(seen.map((m) => m.applied)).toEqual([false, false, false, false, false, true, true, true]);
    // An overflowed step's loss is still the loss (finite), and it leaves the parameters alone.
    for (const m of seen.slice(0, 5)) expect(m.loss).toBe(seen[0]!.loss);
    expect(Number.isFinite(seen[0]!.loss)).toBe(true);
    expect(scaled.steps).toBe(3);
    // Applied steps under a power-of-two scale are the unscaled steps, to the bit: half's
    // rounding does not change under a power of two, and the unscaling divides exactly.
    for (let i = 0; i < 3; i++) {
      const m = await plain.step(batch);
      expect(m.applied).toBe(true);
      expect(m.lossScale).toBeUndefined();
    }
    expect(await params(scaled)).toEqual(await params(plain));
    expect(await params(scaled)).not.toEqual(P0.map(Math.fround));
    expect(scaled.lossScale).toEqual({ scale: 2 ** 15, goodSteps: 3 });
    await Promise.all([scaled.dispose(), plain.dispose()]);
  });

  it('keeps its scale in snapshots and restores it', async () => {
    const state = await create({ lossScale: { init: 2 ** 16, growthInterval: 5 } });
    for (let i = 0; i < 4; i++) await state.step(batch);
    const snap = await state.snapshot();
    expect(snap.lossScale).toEqual(state.lossScale);
    expect(snap.lossScale).toEqual({ scale: 2 ** 15, goodSteps: 3 });
    const pinned = await state.pin();
    expect(pinned.lossScale).toEqual(snap.lossScale);
    await pinned.release();
    const other = await create({ lossScale: { init: 2 ** 16, growthInterval: 5 } });
    await other.restore(snap);
    expect(other.lossScale).toEqual(snap.lossScale);
    // Both go on the same way: the same steps applied, the same scales, the same parameters.
    const [a, b] = [await state.step(batch), await other.step(batch)];
    expect(b).toEqual(a);
    expect(await params(other)).toEqual(await params(state));
    await Promise.all([state.dispose(), other.dispose()]);
  });

  it('accumulates unscaled gradients; an overflow in any forwardBackward skips the optimStep and clears the sums', async () => {
    const state = await create({ accumulate: true, lossScale: { init: 2 ** 16 } });
    const plain = await create({ accumulate: true });
    await state.forwardBackward(batch);
    const skipped = await state.optimStep();
    expect(skipped).toMatchObject({ applied: false, lossScale: 2 ** 16 });
    expect(await params(state)).toEqual(P0.map(Math.fround));
    // Two calls at 2¹⁵, summed, then applied: the unscaled sum, as without scaling.
    for (const s of [state, plain]) {
      await s.forwardBackward(batch);
      await s.forwardBackward(batch);
    }
    expect(await state.optimStep()).toMatchObject({ applied: true, lossScale: 2 ** 15 });
    expect((await plain.optimStep()).applied).toBe(true);
    expect(await params(state)).toEqual(await params(plain));
    await Promise.all([state.dispose(), plain.dispose()]);
  });

  it('is refused for a folded step, whose steps share one feed', async () => {
    await expect(create({ fold: true, lossScale: {} })).rejects.toThrow(
      /a folded step cannot scale its loss/,
    );
  });
});

describe('LossScaler (GradScaler’s rule)', () => {
  it('halves on an overflow, doubles after growthInterval applied steps in a row', () => {
    const s = new LossScaler({ init: 1024, growthInterval: 3 });
    const trace = [true, true, false, true, true, true, true].map((ok) => {
      s.update(ok);
      return s.scale;
    });
    expect(trace).toEqual([1024, 1024, 512, 512, 512, 1024, 1024]);
    expect(new LossScaler().state).toEqual({ scale: 65536, goodSteps: 0 });
  });

  it('refuses settings that would not move the scale', () => {
    expect(() => new LossScaler({ backoffFactor: 1 })).toThrow(/backoffFactor 1 is out of range/);
    expect(() => new LossScaler({ growthInterval: 0 })).toThrow(/growthInterval 0/);
    expect(() => new LossScaler({ init: -1 })).toThrow(/init -1/);
  });
});
