/**
 * One training step through the whole trainer (rows, frozen log-probs, graph, optimizer) against
 * θ − lr·∇L with L written out again here from docs/algorithms.md over an independent float64 forward,
 * differentiated by central differences.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { winnerLoser, winRates } from '../../src/algorithms/estimators.js';
import { RECIPES, recipeFor } from '../../src/algorithms/recipes/index.js';
import { plan } from '../../src/algorithms/steps.js';
import { foldStepsFor, type TrainRoundOptions, trainRound } from '../../src/algorithms/train-round.js';
import { Runtime } from '../../src/engine/index.js';
import { rng } from '../../src/models/common/rng.js';
import type { HostTensor } from '../../src/models/llama/weights.js';
import { initAdapter } from '../../src/models/lora/adapter.js';
import { parseLoraFlag } from '../../src/models/lora/config.js';
import { maxRelativeDiff, weights } from '../helpers/model-fixtures.js';
import { ALGO_OF, HPARAMS, ROUND_CONFIG, ROUND_RECORDS } from '../helpers/round-fixtures.js';
import { referenceLogits } from '../models/llama-reference.js';

const cfg = ROUND_CONFIG;
const RECORDS = ROUND_RECORDS;
const runtime = new Runtime({ workers: 1, intraOpThreads: 1 });
afterAll(() => runtime.close());

const f32 = (w: Record<string, HostTensor>) =>
  Object.fromEntries(
    Object.entries(w).map(([k, t]) => [
      k,
      { ...t, dtype: 'float32' as const, data: Float32Array.from(t.data) },
    ]),
  );

/** log π(y_k | x, y_<k) per completion token, by the float64 reference forward. */
function tokenLogps(w: Record<string, HostTensor>, prompt: number[], completion: number[]): number[] {
  const logits = referenceLogits(cfg, w, [...prompt, ...completion]);
  return completion.map((tok, i) => {
    const z = logits[prompt.length + i - 1]!;
    const m = Math.max(...z);
    return z[tok]! - m - Math.log(z.reduce((a, x) => a + Math.exp(x - m), 0));
  });
}

const logp = (w: Record<string, HostTensor>, prompt: number[], completion: number[]) =>
  tokenLogps(w, prompt, completion).reduce((a, b) => a + b, 0);

/** The losses of docs/algorithms.md again, in plain numbers, over winner/loser by win rate. */
function formula(
  algo: string,
  w: Record<string, HostTensor>,
  t: Record<string, HostTensor>,
  ref: Record<string, HostTensor>,
): number {
  const per = RECORDS.map((r) => {
    const rates = winRates(r.prefs);
    const { winner, loser } = winnerLoser(rates);
    const lp = (m: Record<string, HostTensor>, i: number) => logp(m, r.prompt_ids, r.completion_ids[i]!);
    const gapOf = () => lp(w, winner) - lp(ref, winner) - (lp(w, loser) - lp(ref, loser));
    switch (algo) {
      case 'sppo': {
        const sq = (i: number) => (lp(w, i) - lp(t, i) - 2 * (rates[i]! - 0.5)) ** 2;
        return 0.5 * (sq(winner) + sq(loser));
      }
      case 'inpo': {
        const [eta, tau] = [2, 0.2];
        const d = (m: Record<string, HostTensor>) => lp(m, winner) - lp(m, loser);
        return (d(w) - eta * tau * d(ref) - (1 - eta * tau) * d(t) - eta / 2) ** 2;
      }
      case 'online_dpo':
        return Math.log1p(Math.exp(-0.5 * gapOf()));
      case 'online_ipo':
        return (gapOf() - 1 / (2 * 0.25)) ** 2;
      case 'slic':
        return Math.max(0, 1 - 0.5 * gapOf());
      case 'discopop': {
        const rho = 0.5 * gapOf();
        const wgt = 1 / (1 + Math.exp(-rho / 0.2));
        return (1 - wgt) * Math.log1p(Math.exp(-rho)) + wgt * Math.exp(-rho);
      }
      case 'sppo_all':
        return mean(r.completion_ids.map((_, i) => (lp(w, i) - lp(t, i) - 2 * (rates[i]! - 0.5)) ** 2));
      case 'inpo_soft': {
        // Every ordered pair (i, j), i ≠ j, with target η(P(y_i ≻ y_j) − ½); η = 2, τ = 0.2.
        const h = (i: number) => lp(w, i) - 0.4 * lp(ref, i) - 0.6 * lp(t, i);
        const terms: number[] = [];
        for (let i = 0; i < r.completion_ids.length; i++)
          for (let j = 0; j < r.completion_ids.length; j++)
            if (i !== j) terms.push((h(i) - h(j) - 2 * (r.prefs[i]![j]! - 0.5)) ** 2);
        return mean(terms);
      }
      case 'ipo_soft': {
        const ratio = (i: number) => lp(w, i) - lp(ref, i);
        const terms: number[] = [];
        for (let i = 0; i < r.completion_ids.length; i++)
          for (let j = 0; j < r.completion_ids.length; j++)
            if (i !== j) terms.push((ratio(i) - ratio(j) - (r.prefs[i]![j]! - 0.5) / 0.25) ** 2);
        return mean(terms);
      }
      case 'spo': {
        // softplus(−α·[θ(y_w) − θ(y_l)]) + λ·sg(θ − ref)(y)·θ(y) on y = completion 0, sg held at t.
        const y = r.completion_ids[0]!;
        const pref = Math.log1p(Math.exp(-1.5 * (lp(w, winner) - lp(w, loser))));
        return (
          pref + 0.3 * (logp(t, r.prompt_ids, y) - logp(ref, r.prompt_ids, y)) * logp(w, r.prompt_ids, y)
        );
      }
      case 'nash_md': {
        // The surrogate's gradient is Σ_tok [β·(θ_tok − ref_tok) − (p − ½)]·∇θ_tok with the
        // KL weight held at the step's start (sg), so that weight comes from t (= θ at the start).
        const y = r.completion_ids[0]!;
        const [theta, atStart, reference] = [
          tokenLogps(w, r.prompt_ids, y),
          tokenLogps(t, r.prompt_ids, y),
          tokenLogps(ref, r.prompt_ids, y),
        ];
        const p = r.prefs[0]![1]!;
        return theta.reduce((s, lt, k) => s + (0.1 * (atStart[k]! - reference[k]!) - (p - 0.5)) * lt, 0);
      }
      default:
        throw new Error(algo);
    }
  });
  return per.reduce((a, b) => a + b, 0) / per.length;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** One plain-SGD step of lr 1 over both records: the update is the gradient itself. */
const SGD_STEP = { optimizer: { kind: 'sgd' as const }, lr: 1, steps: 1, batchSize: 2, gradClip: 0, seed: 0 };

/**
 * A plain-SGD step checked at each probe against central differences of `loss`: (before − after)/lr
 * must be ∂loss/∂x. Returns the largest |∂loss/∂x| probed, so a caller can refuse a step that did
 * nothing.
 */
function expectSgdStep(
  before: Record<string, HostTensor>,
  after: Record<string, HostTensor>,
  lr: number,
  probes: [string, number][],
  loss: (params: Record<string, HostTensor>) => number,
  tolerance: number,
): number {
  let largest = 0;
  for (const [name, i] of probes) {
    const h = 1e-5;
    const at = (delta: number) => {
      const p = { ...before, [name]: { ...before[name]!, data: Float64Array.from(before[name]!.data) } };
      p[name]!.data[i]! += delta;
      return loss(p);
    };
    const numeric = (at(h) - at(-h)) / (2 * h);
    const step = (before[name]!.data[i]! - after[name]!.data[i]!) / lr;
    expect(Math.abs(step - numeric), name).toBeLessThan(tolerance * Math.max(1, Math.abs(numeric)));
    largest = Math.max(largest, Math.abs(numeric));
  }
  return largest;
}

describe('one plain-SGD step of duel train round equals θ − lr·∇L', () => {
  it.each(Object.keys(HPARAMS))('%s', async (algo) => {
    const w0 = weights(cfg, 2, 'float64', 5);
    const ref = weights(cfg, 3, 'float64', 5);
    const { lr } = SGD_STEP;
    const { weights: w1, metrics } = await trainRound(runtime, {
      algo: ALGO_OF[algo] ?? algo,
      hparams: HPARAMS[algo]!,
      config: cfg,
      weights: f32(w0),
      reference: f32(ref),
      records: RECORDS,
      ...SGD_STEP,
    });
    expect(metrics.steps).toBe(1);
    expect(metrics.skipped_steps).toBe(0);
    // (nash_md's and spo's loss values are surrogates; only their gradients are the formula's)
    if (algo !== 'nash_md' && algo !== 'spo')
      expect(metrics.loss_first).toBeCloseTo(formula(algo, w0, w0, ref), 3);
    // Central differences of the written-out formula at a spread of entries.
    const probes: [string, number][] = [
      ['model.embed_tokens.weight', 17],
      ['model.layers.0.self_attn.q_proj.weight', 5],
      ['model.layers.0.mlp.down_proj.weight', 40],
      ['model.norm.weight', 3],
    ];
    const largest = expectSgdStep(w0, w1, lr, probes, (w) => formula(algo, w, w0, ref), 2e-3);
    expect(largest).toBeGreaterThan(0.05); // a step that does nothing cannot pass

    // The round's figures, against the same independent forward at the trained weights.
    const w1f = Object.fromEntries(
      Object.entries(w1).map(([k, t]) => [
        k,
        { ...t, dtype: 'float64' as const, data: Float64Array.from(t.data) },
      ]),
    );
    const pairs = RECORDS.flatMap((r) => r.completion_ids.map((c) => [r.prompt_ids, c] as const));
    const ell = pairs.map(([p, c]) => logp(w1f, p, c) - logp(w0, p, c));
    expect(metrics.mean_ell).toBeCloseTo(ell.reduce((a, b) => a + b, 0) / ell.length, 3);
    const deltas = RECORDS.map((r) => {
      const { winner, loser } = winnerLoser(winRates(r.prefs));
      const ratio = (i: number) =>
        logp(w1f, r.prompt_ids, r.completion_ids[i]!) - logp(ref, r.prompt_ids, r.completion_ids[i]!);
      return ratio(winner) - ratio(loser);
    });
    expect(metrics.mean_delta).toBeCloseTo((deltas[0]! + deltas[1]!) / 2, 3);
    expect(metrics.entropy).toBeGreaterThan(0);
    expect(metrics.entropy).toBeLessThan(Math.log(cfg.vocabSize));
    expect(metrics.completion_length).toBeGreaterThan(0);
    expect(Number.isFinite(metrics.kl_to_ref)).toBe(true);
  });
});

describe('one plain-SGD step of a LoRA round equals (A, B) − lr·∇L, L over the merged base + B A', () => {
  // An adapter part-way through training (B ≠ 0, or ∂L/∂A would be zero), on every layer, rsLoRA.
  const lora = parseLoraFlag('rank=2,alpha=4,targets=all,rslora');
  const scale = 4 / Math.sqrt(2);
  const base = weights(cfg, 2, 'float64', 5);
  const start = initAdapter(cfg, lora, 1);
  const next = rng(7);
  for (const [name, t] of Object.entries(start.tensors))
    if (name.endsWith('lora_B.weight')) t.data = t.data.map(() => next() - 0.5);
  /** W + scale·B·A of every wrapped module, float64, from adapter tensors `ab`. */
  const merged = (ab: Record<string, HostTensor>): Record<string, HostTensor> => {
    const out = { ...base };
    for (const name of Object.keys(ab).filter((n) => n.endsWith('.lora_A.weight'))) {
      const m = name.slice(0, -'.lora_A.weight'.length);
      const [A, B, W] = [ab[name]!, ab[`${m}.lora_B.weight`]!, base[`${m}.weight`]!];
      const [o, i] = W.dims as [number, number];
      const data = Float64Array.from(W.data);
      for (let p = 0; p < o; p++)
        for (let q = 0; q < i; q++)
          for (let r = 0; r < 2; r++) data[p * i + q]! += scale * B.data[p * 2 + r]! * A.data[r * i + q]!;
      out[`${m}.weight`] = { dtype: 'float64', dims: W.dims, data };
    }
    return out;
  };
  const ab0 = Object.fromEntries(
    Object.entries(start.tensors).map(([k, t]) => [
      k,
      { ...t, dtype: 'float64' as const, data: Float64Array.from(t.data) },
    ]),
  );

  it.each(['sppo', 'inpo', 'online_dpo', 'nash_md', 'discopop'])('%s', async (algo) => {
    const { lr } = SGD_STEP;
    const {
      weights: ab1,
      adapter,
      metrics,
    } = await trainRound(runtime, {
      algo,
      hparams: HPARAMS[algo]!,
      config: cfg,
      weights: f32(base),
      adapter: start,
      records: RECORDS,
      ...SGD_STEP,
    });
    expect(metrics.steps).toBe(1);
    // Only the adapter trains: the round's weights are its tensors, the base is not among them.
    expect(Object.keys(ab1).sort()).toEqual(Object.keys(start.tensors).sort());
    expect(adapter!.config).toEqual(lora);
    // With no --ref, the reference is the base model without the adapter.
    const ref = base;
    const at = merged(ab0);
    const probes: [string, number][] = [
      ['model.layers.0.self_attn.q_proj.lora_A.weight', 5],
      ['model.layers.0.self_attn.q_proj.lora_B.weight', 1],
      ['model.layers.0.mlp.down_proj.lora_B.weight', 3],
    ];
    const largest = expectSgdStep(ab0, ab1, lr, probes, (ab) => formula(algo, merged(ab), at, ref), 1e-3);
    expect(largest).toBeGreaterThan(1e-3); // a step that does nothing cannot pass
  });
});

/** Five AdamW steps of one record a batch (the records' rows differ in length), with another reference. */
const fiveSteps = (extra: Partial<TrainRoundOptions> = {}, rt = runtime) =>
  trainRound(rt, {
    algo: 'inpo',
    hparams: HPARAMS.inpo!,
    config: cfg,
    weights: f32(weights(cfg, 2, 'float64', 5)),
    reference: f32(weights(cfg, 3, 'float64', 5)),
    records: RECORDS,
    optimizer: { kind: 'adamw' },
    lr: 1e-2,
    steps: 5,
    batchSize: 1,
    gradClip: 1,
    seed: 0,
    ...extra,
  });

/** A rank-2 adapter on every linear layer whose B is not zero, so that A gets a gradient too. */
function liveAdapter(seed: number) {
  const adapter = initAdapter(cfg, parseLoraFlag('rank=2,alpha=4,targets=all'), 1);
  const next = rng(seed);
  for (const [name, t] of Object.entries(adapter.tensors))
    if (name.endsWith('lora_B.weight')) t.data = t.data.map(() => 0.1 * (next() - 0.5));
  return adapter;
}

describe('SPO', () => {
  it('redraws its KL samples from the current weights every resample_every steps', async () => {
    const { metrics } = await fiveSteps({
      algo: 'spo',
      hparams: { resample_every: 2, sample_max_new_tokens: 3 },
      lr: 1e-3,
    });
    expect(metrics).toMatchObject({ steps: 5, skipped_steps: 0, resamples: 2, diverged: false });
  });
});

describe('steps folded into one runtime call (fold_steps)', () => {
  // A folded call pads the two records' rows to one length.
  const round = (foldSteps: number, extra: Partial<TrainRoundOptions> = {}, rt = runtime) =>
    fiveSteps({ foldSteps, ...extra }, rt);

  it('end with the weights and losses of the same steps taken one call each', async () => {
    const [plain, folded] = [await round(1), await round(3)];
    expect(folded.metrics).toMatchObject({ steps: 5, skipped_steps: 0, diverged: false });
    expect(folded.metrics.loss_first).toBeCloseTo(plain.metrics.loss_first, 6);
    expect(folded.metrics.loss_last).toBeCloseTo(plain.metrics.loss_last, 5);
    expect(maxRelativeDiff(folded.weights, plain.weights)).toBeLessThan(1e-5);
    expect(maxRelativeDiff(plain.weights, f32(weights(cfg, 2, 'float64', 5)))).toBeGreaterThan(1e-3);
  });

  it('fold a LoRA round too, its base read by every step as it is', async () => {
    const adapter = liveAdapter(3);
    const [plain, folded] = [await round(1, { adapter }), await round(4, { adapter })];
    expect(maxRelativeDiff(folded.adapter!.tensors, plain.adapter!.tensors)).toBeLessThan(1e-5);
    expect(maxRelativeDiff(plain.adapter!.tensors, adapter.tensors)).toBeGreaterThan(1e-3);
  });

  it('are 8 by default on cuda, where a round can fold, and 1 elsewhere', () => {
    expect(foldStepsFor('cuda', 'float32', false)).toBe(8);
    expect(foldStepsFor('cuda', 'float16', false)).toBe(1);
    expect(foldStepsFor('cuda', 'float32', true)).toBe(1);
    expect(foldStepsFor('webgpu', 'float32', false)).toBe(1);
    expect(foldStepsFor('cpu', 'float32', false)).toBe(1);
  });

  it('are refused where a step needs the host between steps', async () => {
    await expect(round(0)).rejects.toThrow(/fold_steps: must be an integer >= 1, got 0/);
    await expect(
      round(2, { algo: 'spo', hparams: { resample_every: 2, sample_max_new_tokens: 3 } }),
    ).rejects.toThrow(/fold_steps: cannot fold a recipe that samples between its steps \(SPO\)/);
    const half = new Runtime({ workers: 1, intraOpThreads: 1, dtype: 'float16' });
    try {
      await expect(round(2, {}, half)).rejects.toThrow(/fold_steps: cannot fold float16 steps/);
    } finally {
      await half.close();
    }
  });
});

describe('the step plan', () => {
  it('counts epochs of batches unless steps are given, and shapes the learning rate over them', () => {
    const base = { optimizer: { kind: 'sgd' as const }, lr: 0.5, batchSize: 4, gradClip: 0, seed: 0 };
    expect(plan({ ...base, epochs: 3 }, 10).steps).toBe(9);
    expect(plan({ ...base, steps: 7, schedule: 'cosine', warmupSteps: 2 }, 10)).toEqual({
      steps: 7,
      schedule: { kind: 'cosine', peakLr: 0.5, warmupSteps: 2, totalSteps: 7 },
    });
  });
});

describe('round recipes', () => {
  it('own their sampling plans: who samples how many completions', () => {
    const plans = Object.fromEntries(
      Object.values(RECIPES).map((recipe) => {
        const configured = recipe.configure({});
        let plan: string;
        try {
          const p = configured.sampling(0);
          plan = `${p.fromPolicy}+${p.fromMixture}${p.fromMixture ? `@${p.mixtureCoef}` : ''}`;
        } catch (e) {
          plan = (e as Error).message.includes('fixed dataset') ? 'dataset' : String(e);
        }
        return [recipe.name, `${recipe.sampledFrom} ${plan}`];
      }),
    );
    expect(plans).toEqual({
      sft: 'dataset dataset',
      sppo: 'pi_t 5+0',
      inpo: 'pi_t 5+0',
      nash_md: 'mixture 1+1@0.5',
      spo: 'pi_theta 2+0',
      online_ipo: 'pi_theta 2+0',
      ipo_md: 'mixture 0+2@0.5',
      online_dpo: 'pi_theta 2+0',
      slic: 'pi_theta 2+0',
      discopop: 'pi_theta 2+0',
      dpo: 'dataset dataset',
      ipo: 'dataset dataset',
    });
    expect(recipeFor('sppo', { k: 8 }).sampling(0).k).toBe(8);
    expect(() => recipeFor('sppo', { k: 8 }).sampling(4)).toThrow(
      /samples_per_prompt: sppo sets K with its hyper-parameter k/,
    );
    expect(recipeFor('online_dpo', {}).sampling(6)).toMatchObject({ fromPolicy: 6, k: 6 });
    expect(recipeFor('nash_md', { mixture_coef: 0.25 }).sampling(0).mixtureCoef).toBe(0.25);
    expect(() => recipeFor('nash_md', {}).sampling(3)).toThrow(
      /nash_md draws exactly 2 completions per prompt/,
    );
  });

  it('declare the frozen inputs they read, and so whether they need a reference', () => {
    const frozen = Object.fromEntries(Object.values(RECIPES).map((r) => [r.name, [...r.frozen]]));
    expect(frozen).toMatchObject({
      sft: [],
      sppo: ['t'],
      inpo: ['t', 'ref'],
      nash_md: ['refTokens'],
      spo: ['ref'],
    });
    expect(RECIPES.sppo!.usesReference).toBe(false);
    expect(RECIPES.nash_md!.usesReference).toBe(true);
    // The τ of the regularised equilibrium each converges to (the testbed's exploitability floor).
    const tau = (algo: string, hp: Record<string, unknown> = {}) => recipeFor(algo, hp).regularisation;
    expect([
      tau('inpo', { tau: 0.2 }),
      tau('online_ipo'),
      tau('nash_md'),
      tau('discopop'),
      tau('sppo'),
      tau('spo'),
    ]).toEqual([0.2, 0.1, 0.1, 0.05, 0, 0]);
  });

  it('refuse bad hyper-parameters naming the key and the rule', () => {
    expect(() => recipeFor('sppo', { eta: -1 })).toThrow(/eta: sppo: Too small/);
    expect(() => recipeFor('inpo', { eta: 5, tau: 0.5 })).toThrow(/tau: inpo: eta·tau must be below 1/);
    expect(() => recipeFor('online_dpo', { bta: 0.1 })).toThrow(
      /hparams: online_dpo: Unrecognized key: "bta"/,
    );
    expect(() => recipeFor('ppo', {})).toThrow(/unknown algorithm 'ppo'/);
  });

  it('INPO with soft labels refuses records whose K is not the k it pairs', async () => {
    await expect(
      trainRound(runtime, {
        algo: 'inpo',
        hparams: { inpo_labels: 'soft', k: 4 },
        config: cfg,
        weights: f32(weights(cfg, 2, 'float64', 5)),
        reference: f32(weights(cfg, 3, 'float64', 5)),
        records: RECORDS,
        optimizer: { kind: 'sgd' },
        lr: 0.1,
        steps: 1,
        batchSize: 1,
        gradClip: 0,
        seed: 0,
      }),
    ).rejects.toThrow(/data: inpo with soft labels pairs the k = 4 completions of a prompt; a record has 3/);
  });

  it('refuse records whose prefs are not a valid K×K preference matrix', async () => {
    const bad = [
      {
        ...RECORDS[0]!,
        prefs: [
          [0.5, 0.8, 0.3],
          [0.3, 0.5, 0.6],
          [0.7, 0.4, 0.5],
        ],
      },
    ];
    await expect(
      trainRound(runtime, {
        algo: 'sppo',
        hparams: {},
        config: cfg,
        weights: f32(weights(cfg, 2, 'float64', 5)),
        records: bad,
        optimizer: { kind: 'sgd' },
        lr: 0.1,
        steps: 1,
        batchSize: 1,
        gradClip: 0,
        seed: 0,
      }),
    ).rejects.toThrow(/records\[0\].prefs\[0\]\[1\]: prefs\[i\]\[j\] \+ prefs\[j\]\[i\] must be 1/);
  });
});

describe('gradient checkpointing', () => {
  // The recomputed layers give the gradients of the kept ones: the same steps, the same weights.
  it('ends a round with the weights of the same round that keeps every activation', async () => {
    const [plain, checkpointed] = [await fiveSteps(), await fiveSteps({ checkpointing: true })];
    expect(checkpointed.metrics.loss_last).toBe(plain.metrics.loss_last);
    expect(maxRelativeDiff(checkpointed.weights, plain.weights)).toBe(0);
    expect(maxRelativeDiff(plain.weights, f32(weights(cfg, 2, 'float64', 5)))).toBeGreaterThan(1e-3);
  });

  it('trains a LoRA adapter and folds steps as without it', async () => {
    const adapter = liveAdapter(4);
    const plain = await fiveSteps({ adapter });
    const checkpointed = await fiveSteps({ adapter, checkpointing: true, foldSteps: 2 });
    expect(maxRelativeDiff(checkpointed.adapter!.tensors, plain.adapter!.tensors)).toBeLessThan(1e-5);
    expect(maxRelativeDiff(plain.adapter!.tensors, adapter.tensors)).toBeGreaterThan(1e-3);
  });
});
