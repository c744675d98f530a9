/**
 * Each algorithm's round recipe as data: which policy samples its completions, which frozen
 * log-probs it needs (π_t, π_ref), its hyper-parameters with defaults and allowed ranges, how a
 * round record becomes training rows, and its loss over those rows. The trainer
 * (train-round.ts) is generic over recipes; the losses themselves live in losses.ts.
 *
 * Rows come in named slots (e.g. `w` and `l`, one row each per record); every slot of a recipe
 * has the same number of rows per record, so a batch of B records is B·m rows per slot.
 */
import { z } from 'zod';
import { T, type Tensor } from '../engine/index.js';
import { DuelError } from '../platform/errors.js';
import { winnerLoser, winRates } from './estimators.js';
import {
  discopopLoss,
  dpoLoss,
  inpoLoss,
  ipoLoss,
  ipoSoftLoss,
  logRatioGap,
  nashMdLoss,
  slicLoss,
  sppoLoss,
} from './losses.js';

export interface RoundRecord {
  prompt_ids: number[];
  completion_ids: number[][];
  prefs: number[][];
}

export interface Row {
  promptIds: number[];
  completionIds: number[];
  /** Per-row numbers the loss reads (win rate, preference, length, ...). */
  scalars: Record<string, number>;
}

/** What a recipe's loss sees of one slot: θ's summed log-probs and the frozen ones, [rows]. */
export interface SlotLogps {
  theta: Tensor;
  t?: Tensor;
  ref?: Tensor;
  /** Per-token log-probs [rows, T] (0 off the completion), the completion mask, and π_ref's per token. */
  tokTheta: Tensor;
  mask: Tensor;
  tokRef?: Tensor;
  scalar: (name: string) => Tensor;
}

export interface Recipe<H = Record<string, unknown>> {
  name: string;
  /** Who samples the round's completions (for the orchestrator and the docs). */
  sampledFrom: 'pi_t' | 'pi_theta' | 'mixture' | 'dataset';
  /**
   * Frozen log-probs the loss needs (summed; `refTokens`: π_ref per token too), and whether
   * records must carry a K×K `prefs`.
   */
  needs: { t: boolean; ref: boolean; refTokens?: boolean; prefs?: boolean };
  hparams: z.ZodType<H>;
  slots(hp: H): string[];
  /** One record → rows for each slot (the same count for every record of a round). */
  rows(record: RoundRecord, hp: H, draw: () => number): Record<string, Row[]>;
  /** The per-row loss [rows of the first slot]; the trainer averages it. */
  loss(slots: Record<string, SlotLogps>, hp: H): Tensor;
}

const eta = z.number().positive().default(1);
const beta = z.number().positive().default(0.1);

function pairRows(
  r: RoundRecord,
  w: number,
  l: number,
  extra: (i: number) => Record<string, number> = () => ({}),
) {
  const row = (i: number): Row => ({
    promptIds: r.prompt_ids,
    completionIds: r.completion_ids[i]!,
    scalars: { length: r.completion_ids[i]!.length, ...extra(i) },
  });
  return { w: [row(w)], l: [row(l)] };
}

function byWinRate(r: RoundRecord, includeSelf = true) {
  const rates = winRates(r.prefs, includeSelf);
  return { rates, ...winnerLoser(rates) };
}

const sppo: Recipe<{ eta: number; sppo_pairs: 'winner_loser' | 'all'; include_self: boolean }> = {
  name: 'sppo',
  sampledFrom: 'pi_t',
  needs: { t: true, ref: false },
  hparams: z.strictObject({
    eta,
    sppo_pairs: z.enum(['winner_loser', 'all']).default('winner_loser'),
    include_self: z.boolean().default(true),
  }),
  slots: (hp) => (hp.sppo_pairs === 'all' ? ['all'] : ['w', 'l']),
  rows(r, hp) {
    const { rates, winner, loser } = byWinRate(r, hp.include_self);
    if (hp.sppo_pairs === 'all')
      return {
        all: r.completion_ids.map((c, i) => ({
          promptIds: r.prompt_ids,
          completionIds: c,
          scalars: { p: rates[i]! },
        })),
      };
    return pairRows(r, winner, loser, (i) => ({ p: rates[i]! }));
  },
  // winner_loser: ½[(…)_w² + (…)_l²] = the mean of the two squares; all: the mean of K squares.
  loss(s, hp) {
    const sq = (x: SlotLogps) => sppoLoss(x.theta, x.t!, x.scalar('p'), hp.eta);
    return s.all ? sq(s.all) : T.mul(T.add(sq(s.w!), sq(s.l!)), 0.5);
  },
};

const inpo: Recipe<{ eta: number; tau: number; inpo_labels: 'winner' | 'sampled' }> = {
  name: 'inpo',
  sampledFrom: 'pi_t',
  needs: { t: true, ref: true },
  hparams: z
    .strictObject({
      eta,
      tau: z.number().positive().default(0.1),
      inpo_labels: z.enum(['winner', 'sampled']).default('winner'),
    })
    .refine((h) => h.eta * h.tau < 1, { message: 'eta·tau must be below 1', path: ['tau'] }),
  slots: () => ['w', 'l'],
  rows(r, hp, draw) {
    if (hp.inpo_labels === 'winner') {
      const { winner, loser } = byWinRate(r);
      return pairRows(r, winner, loser);
    }
    // The first two completions, labelled by a Bernoulli draw with probability prefs[0][1].
    return draw() < r.prefs[0]![1]! ? pairRows(r, 0, 1) : pairRows(r, 1, 0);
  },
  loss: (s, hp) =>
    inpoLoss(
      { thetaW: s.w!.theta, thetaL: s.l!.theta, refW: s.w!.ref!, refL: s.l!.ref!, tW: s.w!.t!, tL: s.l!.t! },
      hp.eta,
      hp.tau,
    ),
};

/** Δ, optionally with log-probs divided by completion length (IPO's length normalisation). */
function gap(s: Record<string, SlotLogps>, normalise = false): Tensor {
  const n = (x: SlotLogps, v: Tensor) => (normalise ? T.div(v, x.scalar('length')) : v);
  return logRatioGap({
    thetaW: n(s.w!, s.w!.theta),
    thetaL: n(s.l!, s.l!.theta),
    refW: n(s.w!, s.w!.ref!),
    refL: n(s.l!, s.l!.ref!),
  });
}

function pairRecipe<H>(
  name: string,
  sampledFrom: Recipe['sampledFrom'],
  hparams: z.ZodType<H>,
  loss: (s: Record<string, SlotLogps>, hp: H) => Tensor,
): Recipe<H> {
  return {
    name,
    sampledFrom,
    needs: { t: false, ref: true },
    hparams,
    slots: () => ['w', 'l'],
    rows(r) {
      const { winner, loser } = byWinRate(r);
      return pairRows(r, winner, loser);
    },
    loss,
  };
}

const ipoHparams = z.strictObject({
  tau: z.number().positive().default(0.1),
  labels: z.enum(['hard', 'soft']).default('hard'),
  length_normalize: z.boolean().default(false),
  mixture_coef: z.number().min(0).max(1).default(0.5),
});
type IpoH = z.infer<typeof ipoHparams>;

function ipoRecipe(name: string, sampledFrom: Recipe['sampledFrom']): Recipe<IpoH> {
  const hard = pairRecipe<IpoH>(name, sampledFrom, ipoHparams, (s, hp) =>
    ipoLoss(gap(s, hp.length_normalize), hp.tau),
  );
  return {
    ...hard,
    // Soft labels use every ordered pair (y, y') with its preference as the target.
    rows(r, hp, draw) {
      if (hp.labels === 'hard') return hard.rows(r, hp, draw);
      const w: Row[] = [];
      const l: Row[] = [];
      for (const [i, a] of r.completion_ids.entries())
        for (const [j, b] of r.completion_ids.entries()) {
          if (i === j) continue;
          w.push({
            promptIds: r.prompt_ids,
            completionIds: a,
            scalars: { length: a.length, pref: r.prefs[i]![j]! },
          });
          l.push({ promptIds: r.prompt_ids, completionIds: b, scalars: { length: b.length, pref: 0 } });
        }
      return { w, l };
    },
    loss: (s, hp) =>
      hp.labels === 'soft'
        ? ipoSoftLoss(gap(s, hp.length_normalize), s.w!.scalar('pref'), hp.tau)
        : ipoLoss(gap(s, hp.length_normalize), hp.tau),
  };
}

/**
 * Nash-MD on the round's pair: completion 0 was sampled from π_θ (the round's policy), completion
 * 1 from the geometric mixture (1−m)·z_θ + m·z_ref; p = prefs[0][1]. Policy-gradient form with a ½
 * baseline and the sampled per-token KL term (losses.ts).
 */
const nashMd: Recipe<{ beta: number; mixture_coef: number }> = {
  name: 'nash_md',
  sampledFrom: 'mixture',
  needs: { t: false, ref: false, refTokens: true },
  hparams: z.strictObject({ beta, mixture_coef: z.number().min(0).max(1).default(0.5) }),
  slots: () => ['y'],
  rows: (r) => ({
    y: [{ promptIds: r.prompt_ids, completionIds: r.completion_ids[0]!, scalars: { p: r.prefs[0]![1]! } }],
  }),
  loss: (s, hp) => nashMdLoss(s.y!.tokTheta, s.y!.tokRef!, s.y!.mask, s.y!.scalar('p'), hp.beta),
};

/**
 * SFT as a recipe: every completion of a record is a row; the loss is the mean token
 * cross-entropy over all completion tokens of the batch (−Σ logp / Σ length, written per row so
 * the trainer's mean over rows gives exactly that).
 */
const sft: Recipe<Record<string, never>> = {
  name: 'sft',
  sampledFrom: 'pi_t',
  needs: { t: false, ref: false, prefs: false },
  hparams: z.strictObject({}),
  slots: () => ['y'],
  rows: (r) => ({
    y: r.completion_ids.map((c) => ({
      promptIds: r.prompt_ids,
      completionIds: c,
      scalars: { length: c.length },
    })),
  }),
  loss: (s) => T.neg(T.div(s.y!.theta, T.mean(s.y!.scalar('length')))),
};

const onlineDpo = pairRecipe(
  'online_dpo',
  'pi_theta',
  z.strictObject({ beta, label_smoothing: z.number().min(0).max(0.5).default(0) }),
  (s, hp) => dpoLoss(gap(s), hp.beta, hp.label_smoothing),
);
const onlineSlic = pairRecipe('slic', 'pi_theta', z.strictObject({ beta }), (s, hp) =>
  slicLoss(gap(s), hp.beta),
);
const onlineDiscopop = pairRecipe(
  'discopop',
  'pi_theta',
  z.strictObject({ beta: z.number().positive().default(0.05), tau: z.number().positive().default(0.05) }),
  (s, hp) => discopopLoss(gap(s), hp.beta, hp.tau),
);
/** The same loss on a fixed preference dataset (chosen = completion 0, see `pairRecord`). */
const offline = <H>(r: Recipe<H>, name: string): Recipe<H> => ({ ...r, name, sampledFrom: 'dataset' });

export const RECIPES: Record<string, Recipe<never>> = Object.fromEntries(
  [
    sft,
    sppo,
    inpo,
    nashMd,
    ipoRecipe('online_ipo', 'pi_theta'),
    ipoRecipe('ipo_md', 'mixture'),
    onlineDpo,
    onlineSlic,
    onlineDiscopop,
    // ALGORITHMS.md names the offline SLiC and DiscoPOP `slic` and `discopop` too: the recipe
    // is the same, only the data differs (chosen/rejected pairs instead of round samples).
    offline(onlineDpo, 'dpo'),
    offline(ipoRecipe('ipo', 'dataset'), 'ipo'),
  ].map((r) => [r.name, r as unknown as Recipe<never>]),
);

/** A fixed preference pair as a round record: two completions, the chosen one preferred surely. */
export function pairRecord(promptIds: number[], chosen: number[], rejected: number[]): RoundRecord {
  return {
    prompt_ids: promptIds,
    completion_ids: [chosen, rejected],
    prefs: [
      [0.5, 1],
      [0, 0.5],
    ],
  };
}

/** The recipe and its validated hyper-parameters; every problem names the key and the rule. */
export function recipeFor(algo: string, raw: Record<string, unknown>): { recipe: Recipe<never>; hp: never } {
  const recipe = RECIPES[algo];
  if (!recipe)
    throw DuelError.invalidArgument([
      {
        field: 'algo',
        description: `unknown algorithm '${algo}' (known: ${Object.keys(RECIPES).join(', ')})`,
      },
    ]);
  const parsed = recipe.hparams.safeParse(raw);
  if (!parsed.success)
    throw DuelError.invalidArgument(
      parsed.error.issues.map((i) => ({
        field: i.path.join('.') || 'hparams',
        description: `${algo}: ${i.message}`,
      })),
    );
  return { recipe, hp: parsed.data as never };
}

/** `key=value` strings (from --set) as typed values: numbers, booleans, else strings. */
export function parseSets(sets: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const s of sets) {
    const at = s.indexOf('=');
    if (at <= 0)
      throw DuelError.invalidArgument([{ field: '--set', description: `'${s}' is not key=value` }]);
    const [k, v] = [s.slice(0, at), s.slice(at + 1)];
    out[k] =
      v === 'true'
        ? true
        : v === 'false'
          ? false
          : v.trim() !== '' && Number.isFinite(Number(v))
            ? Number(v)
            : v;
  }
  return out;
}
