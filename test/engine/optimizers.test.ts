/**
 * Each optimizer's in-graph step (run in a worker, state kept there) against its textbook update
 * computed independently in plain TypeScript. Loss: Σ ½·a·p² + b·p, so ∇ = a·p + b exactly.
 */
import { afterAll, describe, expect, it } from 'vitest';
import * as T from '../../src/engine/ops/index.js';
import type { OptimizerSpec, ScheduleSpec } from '../../src/engine/optim.js';
import { learningRate, optimizerParts } from '../../src/engine/optim.js';
import { Runtime } from '../../src/engine/runtime/runtime.js';
import { SharedTensors } from '../../src/engine/shared-tensors.js';
import { TrainingState, type TrainingStateOptions } from '../../src/engine/train-state.js';

const A = [1, 2, 0.5, 3];
const B = [0.3, -1, 2, 0.1];
const P0 = [0.5, -0.25, 1, 2];
const f64 = (xs: number[]) => ({ dtype: 'float64' as const, dims: [xs.length], data: Float64Array.from(xs) });

function textbook(
  opt: OptimizerSpec,
  clip: number,
  schedule: ScheduleSpec,
  steps: number,
  scaleA = 1,
  problem: { a: number[]; b: number[]; p0: number[] } = { a: A, b: B, p0: P0 },
): number[] {
  const { a, b } = problem;
  const p = [...problem.p0];
  const s1 = p.map(() => 0);
  const s2 = p.map(() => 0);
  for (let t = 1; t <= steps; t++) {
    const lr = learningRate(schedule, t);
    let g = p.map((x, i) => scaleA * a[i]! * x + b[i]!);
    const norm = Math.sqrt(g.reduce((sum, x) => sum + x * x, 0));
    if (clip > 0) g = g.map((x) => x * Math.min(1, clip / (norm + 1e-6)));
    for (let i = 0; i < p.length; i++) {
      if (opt.kind === 'sgd') {
        const d = g[i]! + (opt.weightDecay ?? 0) * p[i]!;
        if (opt.momentum) {
          s1[i] = opt.momentum * s1[i]! + d;
          p[i]! -= lr * s1[i]!;
        } else p[i]! -= lr * d;
      } else if (opt.kind === 'adamw') {
        const [b1, b2, eps] = [opt.beta1 ?? 0.9, opt.beta2 ?? 0.999, opt.eps ?? 1e-8];
        s1[i] = b1 * s1[i]! + (1 - b1) * g[i]!;
        s2[i] = b2 * s2[i]! + (1 - b2) * g[i]! ** 2;
        const mHat = s1[i]! / (1 - b1 ** t);
        const vHat = s2[i]! / (1 - b2 ** t);
        p[i] = p[i]! * (1 - lr * (opt.weightDecay ?? 0)) - (lr * mHat) / (Math.sqrt(vHat) + eps);
      } else {
        const [alpha, eps] = [opt.alpha ?? 0.99, opt.eps ?? 1e-8];
        s1[i] = alpha * s1[i]! + (1 - alpha) * g[i]! ** 2;
        p[i]! -= (lr * g[i]!) / (Math.sqrt(s1[i]!) + eps);
      }
    }
  }
  return p;
}

const runtime = new Runtime({ workers: 1, intraOpThreads: 1 });
afterAll(() => runtime.close());

async function train(opt: OptimizerSpec, clip: number, schedule: ScheduleSpec, steps: number, fold = false) {
  const state = await TrainingState.create(
    runtime,
    {
      dtype: 'float64',
      build: (g, param) => {
        const p = param('p', [4]);
        const a = g.input('a', 'float64', [4]);
        const b = g.input('b', 'float64', [4]);
        return T.reduceSum(T.add(T.mul(T.mul(a, T.mul(p, p)), 0.5), T.mul(b, p)));
      },
    },
    { optimizer: opt, gradClip: clip },
    schedule,
    { p: f64(P0) },
    { fold },
  );
  const metrics = [];
  for (let i = 0; i < steps; i++) metrics.push(await state.step({ a: f64(A), b: f64(B) }));
  const p = [...((await state.parameters()).p!.data as Float64Array)];
  return { state, metrics, p };
}

const constant: ScheduleSpec = { kind: 'constant', peakLr: 0.1, warmupSteps: 0, totalSteps: 3 };
const warmCosine: ScheduleSpec = { kind: 'cosine', peakLr: 0.2, warmupSteps: 1, totalSteps: 3 };

describe('optimizers match their textbook updates', () => {
  const cases: [string, OptimizerSpec, number, ScheduleSpec][] = [
    ['plain SGD', { kind: 'sgd' }, 0, constant],
    ['SGD + momentum + weight decay', { kind: 'sgd', momentum: 0.9, weightDecay: 0.01 }, 0, warmCosine],
    ['AdamW', { kind: 'adamw', weightDecay: 0.1 }, 0, constant],
    ['AdamW + clipping + warmup/cosine', { kind: 'adamw', beta1: 0.8, beta2: 0.95 }, 0.5, warmCosine],
    ['RMSProp', { kind: 'rmsprop' }, 0, constant],
    ['RMSProp + clipping', { kind: 'rmsprop', alpha: 0.9 }, 1.0, constant],
  ];
  it.each(cases)('%s', async (_name, opt, clip, schedule) => {
    const { p, state } = await train(opt, clip, schedule, 3);
    const want = textbook(opt, clip, schedule, 3);
    for (const [i, x] of p.entries()) expect(x).toBeCloseTo(want[i]!, 12);
    await state.dispose();
  });
});

describe('the flat update layout (every parameter as one vector)', () => {
  // Ten parameters of several ranks, a scalar among them, whose concatenation is the textbook's
  // vector: more pieces than one Split node takes, so the split back is a tree.
  const shapes = [[2, 3], [3], [], [1, 2], [4], [2, 2], [1], [3, 1], [2], [5]];
  const sizes = shapes.map((d) => d.reduce((a, b) => a * b, 1));
  const offsets = sizes.map((_, i) => sizes.slice(0, i).reduce((a, b) => a + b, 0));
  const n = sizes.reduce((a, b) => a + b, 0);
  const av = Array.from({ length: n }, (_, i) => 0.5 + (i % 5) * 0.4);
  const bv = Array.from({ length: n }, (_, i) => Math.sin(i + 1));
  const p0 = Array.from({ length: n }, (_, i) => Math.cos(2 * i) * 1.5);
  const piece = (xs: number[], i: number) => ({
    dtype: 'float64' as const,
    dims: shapes[i]!,
    data: Float64Array.from(xs.slice(offsets[i]!, offsets[i]! + sizes[i]!)),
  });
  const program = {
    dtype: 'float64' as const,
    build: (
      g: import('../../src/engine/graph.js').Graph,
      param: (n: string, s: number[]) => import('../../src/engine/graph.js').Tensor,
    ) => {
      const terms = shapes.map((shape, i) => {
        const p = param(`p${i}`, shape);
        const a = g.input(`a${i}`, 'float64', shape);
        const b = g.input(`b${i}`, 'float64', shape);
        return T.reduceSum(T.add(T.mul(T.mul(a, T.mul(p, p)), 0.5), T.mul(b, p)));
      });
      return terms.reduce((x, y) => T.add(x, y));
    },
  };
  const batch = (b: number[]) =>
    Object.fromEntries(
      shapes.flatMap((_, i) => [
        [`a${i}`, piece(av, i)],
        [`b${i}`, piece(b, i)],
      ]),
    );
  const flatten = async (state: TrainingState) => {
    const ps = await state.parameters();
    return shapes.flatMap((_, i) => [...(ps[`p${i}`]!.data as Float64Array)]);
  };
  const make = (
    opt: OptimizerSpec,
    clip: number,
    schedule: ScheduleSpec,
    updateLayout: 'flat' | 'per-tensor',
  ) =>
    TrainingState.create(
      runtime,
      program,
      { optimizer: opt, gradClip: clip },
      schedule,
      Object.fromEntries(shapes.map((_, i) => [`p${i}`, piece(p0, i)])),
      { updateLayout },
    );

  it.each([
    ['AdamW + clipping + warmup/cosine', { kind: 'adamw', beta1: 0.8, beta2: 0.95, weightDecay: 0.1 }, 0.5],
    ['SGD + momentum', { kind: 'sgd', momentum: 0.9, weightDecay: 0.01 }, 0],
    ['RMSProp + clipping', { kind: 'rmsprop', alpha: 0.9 }, 1.0],
  ] as [string, OptimizerSpec, number][])(
    '%s: the textbook update, as the per-tensor layout gives it',
    async (_n, opt, clip) => {
      const [flat, perTensor] = await Promise.all([
        make(opt, clip, warmCosine, 'flat'),
        make(opt, clip, warmCosine, 'per-tensor'),
      ]);
      for (let i = 0; i < 3; i++) {
        const [f, t] = [await flat.step(batch(bv)), await perTensor.step(batch(bv))];
        expect(f.gradNorm).toBeCloseTo(t.gradNorm, 12);
        expect(f.loss).toBeCloseTo(t.loss, 12);
      }
      const want = textbook(opt, clip, warmCosine, 3, 1, { a: av, b: bv, p0 });
      const [fp, tp] = [await flatten(flat), await flatten(perTensor)];
      for (const [i, x] of fp.entries()) {
        expect(x).toBeCloseTo(want[i]!, 12);
        expect(x).toBeCloseTo(tp[i]!, 12);
      }
      // The optimizer slots come back per parameter, under the same keys in both layouts.
      const [fs, ts] = [await flat.snapshot(), await perTensor.snapshot()];
      expect(Object.keys(fs.tensors).sort()).toEqual(Object.keys(ts.tensors).sort());
      for (const [key, t] of Object.entries(ts.tensors)) {
        expect(fs.tensors[key]!.dims).toEqual(t.dims);
        const got = fs.tensors[key]!.data as Float64Array;
        for (const [j, x] of got.entries()) expect(x).toBeCloseTo(t.data[j] as number, 12);
      }
      await Promise.all([flat.dispose(), perTensor.dispose()]);
    },
  );

  it('skips a step whose gradient is not finite, leaving every parameter and slot untouched', async () => {
    const state = await make({ kind: 'adamw' }, 0, constant, 'flat');
    await state.step(batch(bv));
    const before = await state.snapshot();
    const bad = [...bv];
    bad[offsets[7]!] = Number.NaN;
    expect((await state.step(batch(bad))).applied).toBe(false);
    expect((await state.snapshot()).tensors).toEqual(before.tensors);
    await state.dispose();
  });
});

describe('guard rails', () => {
  it('skips a step whose gradient is not finite, leaving parameters untouched', async () => {
    const { state } = await train({ kind: 'adamw' }, 0, constant, 1);
    const before = [...((await state.parameters()).p!.data as Float64Array)];
    const m = await state.step({ a: f64([1, Number.NaN, 1, 1]), b: f64(B) });
    expect(m.applied).toBe(false);
    expect(state.steps).toBe(1);
    expect([...((await state.parameters()).p!.data as Float64Array)]).toEqual(before);
    await state.dispose();
  });

  it('reports the pre-clipping gradient norm', async () => {
    const { metrics, state } = await train({ kind: 'sgd' }, 0.01, constant, 1);
    const g = P0.map((x, i) => A[i]! * x + B[i]!);
    expect(metrics[0]!.gradNorm).toBeCloseTo(Math.hypot(...g), 12);
    await state.dispose();
  });
});

describe('several steps folded into one ONNX Loop', () => {
  const opt: OptimizerSpec = { kind: 'adamw', beta1: 0.8, beta2: 0.95 };

  it('matches the textbook update, steps given one at a time or all at once', async () => {
    const single = await train(opt, 0.5, warmCosine, 3, true);
    const want = textbook(opt, 0.5, warmCosine, 3);
    for (const [i, x] of single.p.entries()) expect(x).toBeCloseTo(want[i]!, 12);
    await single.state.dispose();

    const { state } = await train(opt, 0.5, warmCosine, 0, true);
    const metrics = await state.stepMany([0, 1, 2].map(() => ({ a: f64(A), b: f64(B) })));
    expect(metrics.map((m) => [m.step, m.applied])).toEqual([
      [1, true],
      [2, true],
      [3, true],
    ]);
    expect(metrics.map((m) => m.lr)).toEqual([1, 2, 3].map((t) => learningRate(warmCosine, t)));
    const p = (await state.parameters()).p!.data as Float64Array;
    for (const [i, x] of p.entries()) expect(x).toBeCloseTo(want[i]!, 12);
    await state.dispose();
  });

  it('skips a non-finite step inside the loop exactly as the single step does', async () => {
    const batches = [B, [Number.NaN, 0, 0, 0], B].map((b) => ({ a: f64(A), b: f64(b) }));
    const folded = await train(opt, 0, constant, 0, true);
    const plain = await train(opt, 0, constant, 0, false);
    const fm = await folded.state.stepMany(batches);
    const pm = await plain.state.stepMany(batches);
    expect(fm.map((m) => m.applied)).toEqual([true, false, true]);
    expect(fm.map((m) => m.step)).toEqual(pm.map((m) => m.step));
    expect(folded.state.steps).toBe(2);
    const [fp, pp] = [await folded.state.parameters(), await plain.state.parameters()];
    expect([...(fp.p!.data as Float64Array)]).toEqual([...(pp.p!.data as Float64Array)]);
    await folded.state.dispose();
    await plain.state.dispose();
  });
});

describe('learning-rate schedules', () => {
  it('warms up linearly, then decays (linear and cosine) to the floor', () => {
    const lin: ScheduleSpec = { kind: 'linear', peakLr: 1, warmupSteps: 4, totalSteps: 14, minRatio: 0.1 };
    expect([1, 2, 4].map((s) => learningRate(lin, s))).toEqual([0.25, 0.5, 1]);
    expect(learningRate(lin, 9)).toBeCloseTo(0.55, 12);
    expect(learningRate(lin, 14)).toBeCloseTo(0.1, 12);
    const cos: ScheduleSpec = { kind: 'cosine', peakLr: 2, warmupSteps: 0, totalSteps: 10 };
    expect(learningRate(cos, 5)).toBeCloseTo(1, 12);
    expect(learningRate(cos, 10)).toBeCloseTo(0, 12);
  });
});

describe('frozen tensors', () => {
  const program = {
    dtype: 'float64' as const,
    // Σ ½·a·p² + b·p with `a` frozen: read every step from the worker's state, never trained.
    build: (
      g: import('../../src/engine/graph.js').Graph,
      param: (n: string, s: number[]) => import('../../src/engine/graph.js').Tensor,
      frozen: (n: string, s: number[]) => import('../../src/engine/graph.js').Tensor,
    ) => {
      const p = param('p', [4]);
      const a = frozen('a', [4]);
      const b = g.input('b', 'float64', [4]);
      return T.reduceSum(T.add(T.mul(T.mul(a, T.mul(p, p)), 0.5), T.mul(b, p)));
    },
  };
  const sgd = { optimizer: { kind: 'sgd' as const }, gradClip: 0 };
  const create = (options: TrainingStateOptions = {}) =>
    TrainingState.create(runtime, program, sgd, constant, { p: f64(P0) }, options);
  /** Three steps, one call each or one folded call; the parameters after them. */
  const threeSteps = async (state: TrainingState) => {
    const batches = [0, 1, 2].map(() => ({ b: f64(B) }));
    const metrics = await state.stepMany(batches);
    expect(metrics.map((m) => m.applied)).toEqual([true, true, true]);
    const p = [...((await state.parameters()).p!.data as Float64Array)];
    await state.dispose();
    return p;
  };
  const want = textbook({ kind: 'sgd' }, 0, constant, 3);

  it('are read every step as given and stay out of the parameters', async () => {
    const state = await create({ frozen: { a: f64(A) } });
    expect(Object.keys(await state.parameters())).toEqual(['p']);
    for (const [i, x] of (await threeSteps(state)).entries()) expect(x).toBeCloseTo(want[i]!, 12);
  });

  it('must be given', async () => {
    await expect(create()).rejects.toThrow(/no value for frozen tensor 'a'/);
  });

  it('are read by every step of a folded Loop as they are, and also when shared', async () => {
    const p = await threeSteps(await create({ frozen: { a: f64(A) }, fold: true }));
    for (const [i, x] of p.entries()) expect(x).toBeCloseTo(want[i]!, 12);
    const shared = await SharedTensors.create(runtime, { a: f64(A) });
    expect(await threeSteps(await create({ shared, fold: true }))).toEqual(p);
    await shared.dispose();
  });
});

describe('gradient accumulation: forwardBackward, then optimStep (a training API)', () => {
  const program = {
    dtype: 'float64' as const,
    build: (
      g: import('../../src/engine/graph.js').Graph,
      param: (n: string, s: number[]) => import('../../src/engine/graph.js').Tensor,
      frozen: (n: string, s: number[]) => import('../../src/engine/graph.js').Tensor,
    ) => {
      const p = param('p', [4]);
      const a = frozen('a', [4]);
      const b = g.input('b', 'float64', [4]);
      return T.reduceSum(T.add(T.mul(T.mul(a, T.mul(p, p)), 0.5), T.mul(b, p)));
    },
  };
  const params = async (s: TrainingState) => [...((await s.parameters()).p!.data as Float64Array)];
  // Several workers: the optimizer step must still find the accumulators (it is made in their worker).
  const spread = new Runtime({ workers: 3, intraOpThreads: 1 });
  afterAll(() => spread.close());

  it('one forwardBackward + optimStep per step is the fused step (AdamW, clipping, warmup/cosine)', async () => {
    const opt = { optimizer: { kind: 'adamw' as const, beta1: 0.8 }, gradClip: 0.5 };
    const make = (accumulate: boolean) =>
      TrainingState.create(
        spread,
        program,
        opt,
        warmCosine,
        { p: f64(P0) },
        { frozen: { a: f64(A) }, accumulate },
      );
    const [fused, split] = await Promise.all([make(false), make(true)]);
    for (let i = 0; i < 3; i++) {
      const want = await fused.step({ b: f64(B) });
      const loss = await split.forwardBackward({ b: f64(B) });
      const got = await split.optimStep();
      expect(loss).toBeCloseTo(want.loss, 12);
      expect(got).toMatchObject({ applied: true, step: want.step, lr: want.lr });
      expect(got.gradNorm).toBeCloseTo(want.gradNorm, 12);
    }
    const [p1, p2] = [await params(fused), await params(split)];
    for (const [i, x] of p2.entries()) expect(x).toBeCloseTo(p1[i]!, 12);
    await Promise.all([fused.dispose(), split.dispose()]);
  });

  it('groups parameters, in order, into parts of at least the given bytes, never splitting one', () => {
    const shapes = new Map<string, number[]>([
      ['a', [4]],
      ['b', [2, 3]],
      ['c', [20]],
      ['d', [1]],
      ['e', [2]],
    ]);
    // float32: a 16 bytes, b 24, c 80, d 4, e 8.
    // d and e (12 bytes) would be a part under half of 32: they join c's.
    expect(optimizerParts(shapes, 4, 32)).toEqual([
      ['a', 'b'],
      ['c', 'd', 'e'],
    ]);
    expect(optimizerParts(shapes, 4, 20)).toEqual([['a', 'b'], ['c'], ['d', 'e']]);
    expect(optimizerParts(shapes, 4, 1000)).toEqual([['a', 'b', 'c', 'd', 'e']]);
    expect(optimizerParts(shapes, 4, 1)).toEqual([['a'], ['b'], ['c'], ['d'], ['e']]);
  });

  it('an optimizer step in parts writes the bits of one run, a skipped step and clipping included', async () => {
    // Three float32 parameters of different sizes (what a trainer holds); in parts, each its own.
    const sizes = { w: [3, 4], u: [5], v: [2, 2] } as const;
    const f32 = (n: number, k: number) => ({
      dtype: 'float32' as const,
      data: Float32Array.from({ length: n }, (_, i) => Math.sin(1 + i * 0.7 + k)),
    });
    const prog = {
      dtype: 'float32' as const,
      build: (
        g: import('../../src/engine/graph.js').Graph,
        param: (n: string, s: number[]) => import('../../src/engine/graph.js').Tensor,
      ) => {
        const b = g.input('b', 'float32', [4]);
        const [w, u, v] = Object.entries(sizes).map(([n, s]) => param(n, [...s]));
        const y = T.add(T.matmul(T.reshape(b, [1, 4]), T.transposeLast(w!)), T.reduceSum(T.mul(u!, u!)));
        return T.add(T.reduceSum(T.mul(y, y)), T.reduceSum(T.mul(T.reshape(v!, [4]), b)));
      },
    };
    const init = () =>
      Object.fromEntries(
        Object.entries(sizes).map(([n, s], k) => [
          n,
          {
            ...f32(
              s.reduce((a, b) => a * b, 1),
              k,
            ),
            dims: [...s],
          },
        ]),
      );
    const make = (optimizerPartBytes?: number) =>
      TrainingState.create(
        runtime,
        prog,
        { optimizer: { kind: 'adamw', weightDecay: 0.01 }, gradClip: 0.5 },
        warmCosine,
        init(),
        { accumulate: true, ...(optimizerPartBytes ? { optimizerPartBytes } : {}) },
      );
    const [whole, parts] = [await make(), await make(1)];
    expect([whole.optimizerRuns, parts.optimizerRuns]).toEqual([1, 4]);
    const batch = (k: number) => ({ b: { dims: [4], ...f32(4, 10 + k) } });
    const nan = {
      b: { dtype: 'float32' as const, dims: [4], data: Float32Array.from([1, Number.NaN, 0, 2]) },
    };
    const metrics: unknown[][] = [[], []];
    for (const [i, b] of [batch(0), batch(1), nan, batch(2), batch(3)].entries())
      for (const [j, s] of [whole, parts].entries()) {
        await s.forwardBackward(b);
        if (i === 3) await s.forwardBackward(batch(4));
        metrics[j]!.push(await s.optimStep());
      }
    expect(metrics[1]).toEqual(metrics[0]);
    expect((metrics[0] as { applied: boolean }[]).map((m) => m.applied)).toEqual([
      true,
      true,
      false,
      true,
      true,
    ]);
    // Clipped: every applied step's norm is above 0.5.
    expect((metrics[0] as { gradNorm: number }[]).every((m) => !(m.gradNorm <= 0.5))).toBe(true);
    const [a, b] = [await whole.snapshot(), await parts.snapshot()];
    expect(Object.keys(b.tensors).sort()).toEqual(Object.keys(a.tensors).sort());
    for (const [k, t] of Object.entries(a.tensors))
      expect(Array.from(b.tensors[k]!.data as Float32Array), k).toEqual(Array.from(t.data as Float32Array));
    await Promise.all([whole.dispose(), parts.dispose()]);
  });

  it('several forwardBackward calls sum their gradients; optimStep zeroes them; an explicit lr is used', async () => {
    const sgd = { optimizer: { kind: 'sgd' as const }, gradClip: 0 };
    const state = await TrainingState.create(
      runtime,
      program,
      sgd,
      constant,
      { p: f64(P0) },
      {
        frozen: { a: f64(A) },
        accumulate: true,
      },
    );
    const B2 = B.map((x) => -2 * x);
    const lossA = await state.forwardBackward({ b: f64(B) });
    const lossB = await state.forwardBackward({ b: f64(B2) });
    const first = await state.optimStep(0.05);
    expect(first.loss).toBeCloseTo(lossA + lossB, 12);
    expect(first.lr).toBe(0.05);
    // ∇ = a·p + b per call: the step takes both.
    const want1 = P0.map((p, i) => p - 0.05 * (2 * A[i]! * p + B[i]! + B2[i]!));
    const p1 = await params(state);
    for (const [i, x] of p1.entries()) expect(x).toBeCloseTo(want1[i]!, 12);
    // Zeroed: the next step sees only its own gradient.
    await state.forwardBackward({ b: f64(B) });
    await state.optimStep();
    const want2 = want1.map((p, i) => p - constant.peakLr * (A[i]! * p + B[i]!));
    for (const [i, x] of (await params(state)).entries()) expect(x).toBeCloseTo(want2[i]!, 12);
    await state.dispose();
  });
});
