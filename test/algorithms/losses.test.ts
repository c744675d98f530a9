/** The loss family: published check values, gradients against finite differences, and what INPO means. */
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import {
  discopopLoss,
  dpoLoss,
  inpoAllPairsLoss,
  inpoLoss,
  ipoLoss,
  ipoSoftLoss,
  judgeLoss,
  logRatioGap,
  nashMdLoss,
  sftLoss,
  slicLoss,
  spoKlLoss,
  spoPreferenceLoss,
  sppoLoss,
} from '../../src/algorithms/losses.js';
import { compile, Graph, grad, Runtime, T, type Tensor, TrainingState } from '../../src/engine/index.js';
import { rng } from '../../src/models/common/rng.js';
import { gradcheck } from '../helpers/gradcheck.js';

const f64 = (g: Graph, xs: number[]) => g.constant(Float64Array.from(xs), 'float64', [xs.length]);

async function evaluate(build: (g: Graph) => Tensor): Promise<number[]> {
  const g = new Graph();
  const out = build(g);
  const s = await ort.InferenceSession.create(compile(g, { out }).bytes);
  return [...((await s.run({})).out!.data as Float64Array)];
}

/** ∂(Σ loss)/∂x at x, through duel's autodiff. */
async function gradientOf(
  build: (g: Graph, x: Tensor) => Tensor,
  at: number[],
  shape: number[],
): Promise<number[]> {
  const g = new Graph();
  const x = g.input('x', 'float64', shape);
  const [dx] = grad(T.reduceSum(build(g, x)), [x]);
  const s = await ort.InferenceSession.create(compile(g, { dx: dx! }).bytes);
  return [
    ...((await s.run({ x: new ort.Tensor('float64', Float64Array.from(at), shape) })).dx!
      .data as Float64Array),
  ];
}

describe('published check values (torchtune DPO tests)', () => {
  const pairs = (g: Graph) =>
    logRatioGap({
      thetaW: f64(g, [-0.5, -10, -1]),
      thetaL: f64(g, [-0.1, -30, -21]),
      refW: f64(g, [-0.5, -10.1, -0.1]),
      refL: f64(g, [-0.1, -20.1, -0.1]),
    });

  it('Δ = [0, 10, 20]', async () => {
    const gap = await evaluate(pairs);
    for (const [i, x] of gap.entries()) expect(x).toBeCloseTo([0, 10, 20][i]!, 10);
  });

  it('DPO β = 0.1 → [0.693147, 0.313262, 0.126928]', async () => {
    const l = await evaluate((g) => dpoLoss(pairs(g), 0.1));
    // the published [0.693147, 0.313262, 0.126928]; softplus(0) = ln 2
    const published = [Math.LN2, 0.313262, 0.126928];
    for (const [i, x] of l.entries()) expect(x).toBeCloseTo(published[i]!, 6);
  });

  it('hinge (SLiC) β = 0.1 → [1, 0, 0]', async () => {
    const l = await evaluate((g) => slicLoss(pairs(g), 0.1));
    for (const [i, x] of l.entries()) expect(x).toBeCloseTo([1, 0, 0][i]!, 12);
  });

  it('label smoothing mixes in the flipped label', async () => {
    const [l] = await evaluate((g) => dpoLoss(f64(g, [2]), 0.5, 0.2));
    expect(l).toBeCloseTo(0.8 * Math.log1p(Math.exp(-1)) + 0.2 * Math.log1p(Math.exp(1)), 12);
  });
});

type Case = [string, (g: Graph, x: Tensor[]) => Tensor, number];
/** INPO's all-pairs loss over one record of 3 completions; `behaviour` makes it a stale record. */
const allPairs = (g: Graph, theta: Tensor, behaviour?: number[]) =>
  inpoAllPairsLoss(
    {
      theta,
      ref: f64(g, [0.1, -1, 2]),
      t: f64(g, [0.3, 0.2, 0.1]),
      position: f64(g, [0, 1, 2]),
      prefs: g.constant(Float64Array.from([0.5, 0.8, 0.3, 0.2, 0.5, 0.6, 0.7, 0.4, 0.5]), 'float64', [3, 3]),
      ...(behaviour ? { behaviour: f64(g, behaviour) } : {}),
    },
    3,
    2,
    0.2,
  );

const CASES: Case[] = [
  ['sppo', (g, [a, b]) => sppoLoss(a!, b!, f64(g, [0.9, 0.2, 0.5]), 3), 2],
  [
    'inpo',
    (g, [a, b]) =>
      inpoLoss(
        {
          thetaW: a!,
          thetaL: b!,
          refW: f64(g, [0.1, -1, 2]),
          refL: f64(g, [0, 1, -2]),
          tW: f64(g, [0.3, 0.2, 0.1]),
          tL: f64(g, [-0.3, 1, 0]),
        },
        2,
        0.2,
      ),
    2,
  ],
  [
    'ipo (hard)',
    (g, [a, b]) =>
      ipoLoss(
        logRatioGap({ thetaW: a!, thetaL: b!, refW: f64(g, [0.1, 0.2, 0.3]), refL: f64(g, [0, 0, 0]) }),
        0.1,
      ),
    2,
  ],
  ['inpo (all pairs, soft)', (g, [a]) => allPairs(g, a!), 1],
  ['inpo (all pairs, soft, importance-weighted)', (g, [a]) => allPairs(g, a!, [-0.4, 0.5, 0.2]), 1],
  ['ipo (soft)', (g, [a, b]) => ipoSoftLoss(T.sub(a!, b!), f64(g, [0.9, 0.1, 0.5]), 0.1), 2],
  ['dpo (smoothed)', (_, [a]) => dpoLoss(a!, 0.7, 0.1), 1],
  ['slic', (_, [a]) => slicLoss(T.add(a!, 3), 0.1), 1],
  ['discopop', (_, [a]) => discopopLoss(a!, 0.5, 0.05), 1],
  ['spo (preference)', (_, [a, b]) => spoPreferenceLoss(a!, b!, 0.7), 2],
  ['judge (hard)', (g, [a, b]) => judgeLoss(T.sub(a!, b!), f64(g, [1, 1, 1])), 2],
  ['judge (soft)', (g, [a, b]) => judgeLoss(T.sub(a!, b!), f64(g, [0.9, 0.2, 0.5])), 2],
];

describe('gradients agree with finite differences (float64)', () => {
  it.each(CASES)('%s', async (_n, build, inputs) => {
    const { maxRelError } = await gradcheck(
      build,
      Array.from({ length: inputs }, () => ({ shape: [3] })),
    );
    expect(maxRelError).toBeLessThan(1e-6);
  });

  // The score-function losses are surrogates: their value is not the objective, their gradient
  // is (sg holds the KL weight fixed), so the check is against the gradient formula itself.
  it('nash_md: ∂L/∂logπ_θ(y_tok) = β·(logπ_θ − logπ_ref) − (p − ½) on completion tokens', async () => {
    const theta = [-1, -2, -0.5, -1, -3, -0.1];
    const ref = [-1.5, -1, -0.7, -2, -3, -0.4];
    const mask = [1, 1, 0, 1, 1, 1];
    const p = [0.8, 0.3];
    const d = await gradientOf(
      (g, x) =>
        nashMdLoss(
          x,
          g.constant(Float64Array.from(ref), 'float64', [2, 3]),
          g.constant(Float64Array.from(mask), 'float64', [2, 3]),
          f64(g, p),
          0.1,
        ),
      theta,
      [2, 3],
    );
    theta.forEach((t, i) => {
      const want = mask[i]! * (0.1 * (t - ref[i]!) - (p[Math.floor(i / 3)]! - 0.5));
      expect(d[i]).toBeCloseTo(want, 12);
    });
  });

  it('spo KL: ∂L/∂logp_θ = λ·(logp_θ − logp_ref)', async () => {
    const theta = [0.2, -1, 3];
    const ref = [0.5, -0.2, 1];
    const d = await gradientOf((g, x) => spoKlLoss(x, f64(g, ref), 0.3), theta, [3]);
    for (const [i, t] of theta.entries()) expect(d[i]).toBeCloseTo(0.3 * (t - ref[i]!), 12);
  });

  it('sft: mean cross-entropy over completion tokens', async () => {
    const [l] = await evaluate((g) =>
      sftLoss(
        g.constant(Float64Array.from([-1, -2, -3, -4]), 'float64', [2, 2]),
        g.constant(Float64Array.from([1, 0, 1, 1]), 'float64', [2, 2]),
      ),
    );
    expect(l).toBeCloseTo(8 / 3, 12);
  });
});

/**
 * Minimises an expected loss over a softmax policy on n single-token completions (Adam, cosine
 * decay, 3000 steps folded into one ONNX Loop) and returns the policy it reaches.
 */
async function minimisePolicy(
  runtime: Runtime,
  start: number[],
  expectedLoss: (g: Graph, logp: Tensor) => Tensor,
): Promise<number[]> {
  const n = start.length;
  const state = await TrainingState.create(
    runtime,
    { dtype: 'float64', build: (g, param) => expectedLoss(g, T.logSoftmax(param('logits', [n]))) },
    { optimizer: { kind: 'adamw' }, gradClip: 0 },
    { kind: 'cosine', peakLr: 0.05, warmupSteps: 0, totalSteps: 3000 },
    { logits: { dtype: 'float64', dims: [n], data: Float64Array.from(start.map(Math.log)) } },
    { fold: true },
  );
  await state.stepMany(Array.from({ length: 3000 }, () => ({})));
  const logits = [...((await state.parameters()).logits!.data as Float64Array)];
  await state.dispose();
  return normalise(logits.map(Math.exp));
}

const normalise = (xs: number[]) => xs.map((x) => x / xs.reduce((a, b) => a + b, 0));

/** π_t (and π_ref) over n completions and an antisymmetric preference matrix, from a seed. */
function tabularGame(n: number, seed: number) {
  const r = rng(seed);
  const piT = normalise(Array.from({ length: n }, () => 0.2 + r()));
  const piRef = normalise(Array.from({ length: n }, () => 0.2 + r()));
  const prefs = Array.from({ length: n }, () => new Array<number>(n).fill(0.5));
  for (let i = 0; i < n; i++)
    for (let j = i + 1; j < n; j++) {
      prefs[i]![j] = r();
      prefs[j]![i] = 1 - prefs[i]![j]!;
    }
  // P(y ≻ π_t) = Σ_y' π_t(y')·P(y ≻ y')
  const winVsPolicy = prefs.map((row) => row.reduce((s, p, j) => s + piT[j]! * p, 0));
  return { piT, piRef, prefs, winVsPolicy };
}

describe('the tabular meaning of INPO (one prompt, N single-token completions)', () => {
  const runtime = new Runtime({ workers: 1, intraOpThreads: 1 });
  afterAll(() => runtime.close());

  it("the expected loss's minimizer is the mirror-descent step π_t^(1−ητ)·π_ref^(ητ)·exp(η·P(y ≻ π_t))", async () => {
    const n = 4;
    const [eta, tau] = [1.5, 0.3];
    const { piT, piRef, prefs, winVsPolicy } = tabularGame(n, 3);
    // Every ordered pair (a, b) weighted by π_t(a)·π_t(b)·P(a ≻ b): drawn from π_t, a labelled winner.
    const pairs = Array.from({ length: n * n }, (_, k) => [Math.floor(k / n), k % n] as const);
    const weight = pairs.map(([a, b]) => piT[a]! * piT[b]! * prefs[a]![b]!);
    const onehot = (side: 0 | 1) =>
      Float64Array.from(pairs.flatMap((p) => Array.from({ length: n }, (_, c) => (p[side] === c ? 1 : 0))));
    const got = await minimisePolicy(runtime, piT, (g, logp) => {
      const pick = (side: 0 | 1, v: Tensor) =>
        T.reshape(T.matmul(g.constant(onehot(side), 'float64', [n * n, n]), T.reshape(v, [n, 1])), [n * n]);
      const log = (xs: number[]) => g.constant(Float64Array.from(xs.map(Math.log)), 'float64', [n]);
      const losses = inpoLoss(
        {
          thetaW: pick(0, logp),
          thetaL: pick(1, logp),
          refW: pick(0, log(piRef)),
          refL: pick(1, log(piRef)),
          tW: pick(0, log(piT)),
          tL: pick(1, log(piT)),
        },
        eta,
        tau,
      );
      return T.reduceSum(T.mul(losses, g.constant(Float64Array.from(weight), 'float64', [n * n])));
    });
    const want = normalise(
      piT.map((p, i) => p ** (1 - eta * tau) * piRef[i]! ** (eta * tau) * Math.exp(eta * winVsPolicy[i]!)),
    );
    for (const [i, p] of got.entries()) expect(Math.abs(p - want[i]!)).toBeLessThan(1e-4);
  });
});

describe('the tabular meaning of INPO with soft labels on every pair', () => {
  const runtime = new Runtime({ workers: 1, intraOpThreads: 1 });
  afterAll(() => runtime.close());
  const n = 4;
  const [eta, tau] = [1.5, 0.3];

  /** The minimiser of the all-pairs loss over K = n completions, one of each, from π_t's weights. */
  const allPairsMinimiser = (piT: number[], piRef: number[], prefs: number[][], behaviour?: number[]) =>
    minimisePolicy(runtime, piT, (g, logp) => {
      const vector = (xs: number[]) => g.constant(Float64Array.from(xs), 'float64', [n]);
      return T.reduceSum(
        inpoAllPairsLoss(
          {
            theta: logp,
            ref: vector(piRef.map(Math.log)),
            t: vector(piT.map(Math.log)),
            prefs: g.constant(Float64Array.from(prefs.flat()), 'float64', [n, n]),
            position: vector([...piT.keys()]),
            ...(behaviour ? { behaviour: vector(behaviour) } : {}),
          },
          n,
          eta,
          tau,
        ),
      );
    });
  const mirrorStep = (piT: number[], piRef: number[], winVsPolicy: number[]) =>
    normalise(
      piT.map((p, i) => p ** (1 - eta * tau) * piRef[i]! ** (eta * tau) * Math.exp(eta * winVsPolicy[i]!)),
    );

  it('K completions drawn once each (π_t uniform): the minimizer is the same mirror-descent step', async () => {
    const { piRef, prefs } = tabularGame(n, 5);
    const piT = new Array<number>(n).fill(1 / n);
    // Under a uniform π_t every completion is one of the K samples and each ordered pair is equally likely.
    const winVsPolicy = prefs.map((row) => row.reduce((s, p) => s + p / n, 0));
    const want = mirrorStep(piT, piRef, winVsPolicy);
    for (const [i, p] of (await allPairsMinimiser(piT, piRef, prefs)).entries())
      expect(Math.abs(p - want[i]!)).toBeLessThan(1e-4);
  });

  it('K completions from an older policy: with its log-probs the minimizer is the step against π_t, not against the sample', async () => {
    const { piT, piRef, prefs, winVsPolicy } = tabularGame(n, 7);
    // Drawn by an older, uniform policy (each completion once); the round trains from π_t.
    const behaviour = new Array<number>(n).fill(Math.log(1 / n));
    const want = mirrorStep(piT, piRef, winVsPolicy);
    for (const [i, p] of (await allPairsMinimiser(piT, piRef, prefs, behaviour)).entries())
      expect(Math.abs(p - want[i]!)).toBeLessThan(1e-4);
    // Unweighted, the opponent is the sample (uniform), and the step lands elsewhere.
    const off = (await allPairsMinimiser(piT, piRef, prefs)).map((p, i) => Math.abs(p - want[i]!));
    expect(Math.max(...off)).toBeGreaterThan(1e-3);
  });
});

describe('the tabular meaning of SPPO (one prompt, N single-token completions)', () => {
  const runtime = new Runtime({ workers: 1, intraOpThreads: 1 });
  afterAll(() => runtime.close());
  const n = 4;
  const { piT, winVsPolicy } = tabularGame(n, 8);
  const target = (eta: number) => piT.map((p, y) => Math.log(p) + eta * (winVsPolicy[y]! - 0.5));

  /** The exact minimizer of Σ_y π_t(y)(log π(y) − target_y)² over softmax policies, by plain gradient descent. */
  function exactMinimizer(eta: number): number[] {
    const tgt = target(eta);
    const z = piT.map(Math.log);
    for (let it = 0; it < 200_000; it++) {
      const m = Math.max(...z);
      const lse = m + Math.log(z.reduce((s, v) => s + Math.exp(v - m), 0));
      const logp = z.map((v) => v - lse);
      const res = logp.map((l, y) => piT[y]! * (l - tgt[y]!));
      const total = res.reduce((a, b) => a + b, 0);
      const step = z.map((_, k) => 2 * res[k]! - 2 * Math.exp(logp[k]!) * total);
      if (Math.max(...step.map(Math.abs)) < 1e-13) break;
      for (let k = 0; k < n; k++) z[k]! -= 0.5 * step[k]!;
    }
    return normalise(z.map(Math.exp));
  }
  const multiplicativeWeights = (eta: number) =>
    normalise(piT.map((p, y) => p * Math.exp(eta * winVsPolicy[y]!)));
  const l1 = (a: number[], b: number[]) => a.reduce((s, x, i) => s + Math.abs(x - b[i]!), 0);

  it('training on the expected loss reaches the exact minimizer, computed independently', async () => {
    const eta = 1;
    const got = await minimisePolicy(runtime, piT, (g, logp) => {
      const vec = (xs: number[]) => g.constant(Float64Array.from(xs), 'float64', [n]);
      const losses = sppoLoss(logp, vec(piT.map(Math.log)), vec(winVsPolicy), eta);
      return T.reduceSum(T.mul(losses, vec(piT)));
    });
    const want = exactMinimizer(eta);
    for (const [i, p] of got.entries()) expect(Math.abs(p - want[i]!)).toBeLessThan(1e-4);
  });

  it('is close to the multiplicative-weights step, not equal, and closer as η shrinks', () => {
    const etas = [2, 1, 0.5, 0.25];
    const gaps = etas.map((eta) => l1(exactMinimizer(eta), multiplicativeWeights(eta)));
    // The figures for the closing note: L1 distance between the minimizer and the MW step.
    process.stderr.write(
      `SPPO minimizer vs multiplicative weights, L1 by eta ${JSON.stringify(Object.fromEntries(etas.map((e, i) => [e, Number(gaps[i]!.toExponential(3))])))}\n`,
    );
    expect(gaps[0]!).toBeGreaterThan(1e-4);
    for (let i = 1; i < gaps.length; i++) expect(gaps[i]!).toBeLessThan(gaps[i - 1]!);
  });
});

describe('the tabular meaning of Nash-MD', () => {
  it("the surrogate's expected gradient is the policy gradient of −E_πθ[P(y ≻ mixture)] + β·KL(π_θ‖π_ref)", async () => {
    const n = 5;
    const beta = 0.3;
    const { piT, piRef, prefs } = tabularGame(n, 11);
    const mixture = normalise(piT.map((p, i) => p ** 0.5 * piRef[i]! ** 0.5)); // held fixed: drawn at the step's start
    const pWin = prefs.map((row) => row.reduce((s, p, j) => s + mixture[j]! * p, 0));
    const logits = piT.map((p) => Math.log(p) + 0.1);

    // The engine: Σ_y sg(π_θ(y))·surrogate(y), one single-token sample per row.
    const d = await gradientOf(
      (g, z) => {
        const logp = T.logSoftmax(z);
        const col = (t: Tensor) => T.reshape(t, [n, 1]);
        const vec = (xs: number[]) => g.constant(Float64Array.from(xs), 'float64', [n]);
        const perSample = nashMdLoss(
          col(logp),
          col(vec(piRef.map(Math.log))),
          col(vec(new Array(n).fill(1))),
          vec(pWin),
          beta,
        );
        return T.mul(T.stopGradient(T.exp(logp)), perSample);
      },
      logits,
      [n],
    );
    // The objective by central differences, in plain numbers.
    const objective = (z: number[]) => {
      const p = normalise(z.map(Math.exp));
      return p.reduce((s, pi, y) => s - pi * (pWin[y]! - 0.5) + beta * pi * Math.log(pi / piRef[y]!), 0);
    };
    for (let k = 0; k < n; k++) {
      const h = 1e-6;
      const up = logits.map((z, i) => (i === k ? z + h : z));
      const down = logits.map((z, i) => (i === k ? z - h : z));
      expect(d[k]).toBeCloseTo((objective(up) - objective(down)) / (2 * h), 7);
    }
  });
});
