/** Pieces several recipes share: hyper-parameter rules, winner/loser rows, the Δ log-ratio gap, pair recipes. */
import { z } from 'zod';
import { T, type Tensor } from '../../engine/index.js';
import { winnerLoser, winRates } from '../estimators.js';
import { logRatioGap } from '../losses.js';
import { anyK, datasetOnly } from '../round-plan.js';
import {
  defineRecipe,
  type Recipe,
  type RoundRecord,
  type Row,
  type SampledFrom,
  type SlotLogps,
} from './recipe.js';

export const eta = z.number().positive().default(1);
export const beta = z.number().positive().default(0.1);
/** K for the recipes that rank several completions by win rate. */
export const k = z.number().int().min(2).default(5);

type Length = { length: number };

/** Completions `w` and `l` of a record as one row each, with their length and any `extra` features. */
export function pairRows<E extends Record<string, number>>(
  r: RoundRecord,
  w: number,
  l: number,
  extra: (i: number) => E,
): { w: Row<Length & E>[]; l: Row<Length & E>[] } {
  const row = (i: number): Row<Length & E> => ({
    promptIds: r.prompt_ids,
    completionIds: r.completion_ids[i]!,
    features: { length: r.completion_ids[i]!.length, ...extra(i) },
  });
  return { w: [row(w)], l: [row(l)] };
}

export const noFeatures = (): Record<never, number> => ({});

export function byWinRate(r: RoundRecord, includeSelf = true) {
  const rates = winRates(r.prefs, includeSelf);
  return { rates, ...winnerLoser(rates) };
}

type PairSlots = { w: SlotLogps<Length, 'ref'>; l: SlotLogps<Length, 'ref'> };

/** Δ, optionally with log-probs divided by completion length (IPO's length normalisation). */
export function gap(s: PairSlots, normalise = false): Tensor {
  const n = (x: SlotLogps<Length, 'ref'>, v: Tensor) => (normalise ? T.div(v, x.features.length) : v);
  return logRatioGap({
    thetaW: n(s.w, s.w.theta),
    thetaL: n(s.l, s.l.theta),
    refW: n(s.w, s.w.ref),
    refL: n(s.l, s.l.ref),
  });
}

/**
 * A loss on the judge's winner and loser against π_ref, sampled by `sampledFrom` (any K ≥ 2); with
 * `sampledFrom: 'dataset'` the same loss on fixed chosen/rejected pairs (see `pairRecord`).
 */
export function pairRecipe<H extends { beta: number }>(
  name: string,
  sampledFrom: Exclude<SampledFrom, 'mixture'>,
  hparams: z.ZodType<H>,
  loss: (s: PairSlots, hp: H) => Tensor,
): Recipe {
  return defineRecipe({
    name,
    sampledFrom,
    hparams,
    frozen: ['ref'],
    // β scales Δ inside the loss: the regularised equilibrium's τ.
    regularisation: (hp) => hp.beta,
    sampling: (_hp, requestedK) => (sampledFrom === 'dataset' ? datasetOnly(name) : anyK(requestedK)),
    rows(r) {
      const { winner, loser } = byWinRate(r);
      return pairRows(r, winner, loser, noFeatures);
    },
    loss,
  });
}

/**
 * A fixed preference pair as a round record: two completions, the chosen one preferred with
 * probability `preference` (1, surely, unless the data gives a share).
 */
export function pairRecord(
  promptIds: number[],
  chosen: number[],
  rejected: number[],
  preference = 1,
): RoundRecord {
  return {
    prompt_ids: promptIds,
    completion_ids: [chosen, rejected],
    prefs: [
      [0.5, preference],
      [1 - preference, 0.5],
    ],
  };
}
