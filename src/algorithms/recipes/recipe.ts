/**
 * What every round recipe is made of. A recipe is data: which policy samples its completions,
 * which frozen log-probs it needs (π_t, π_ref), its hyper-parameters with defaults and allowed
 * ranges, how a round record becomes training rows, and its loss over those rows. The trainer
 * (../train-round.ts) is generic over recipes; the losses themselves live in ../losses.ts.
 *
 * Rows come in named slots (e.g. `w` and `l`, one row each per record); every slot of a recipe
 * has the same number of rows per record, so a batch of B records is B·m rows per slot.
 */
import { z } from 'zod';
import { T, type Tensor } from '../../engine/index.js';
import { winnerLoser, winRates } from '../estimators.js';
import { logRatioGap } from '../losses.js';

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
  /** Completions the round samples per prompt (K). */
  completions(hp: H): number;
  /**
   * Frozen log-probs the loss needs (summed; `refTokens`: π_ref per token too), and whether
   * records must carry a K×K `prefs`.
   */
  needs: { t: boolean; ref: boolean; refTokens?: boolean; prefs?: boolean };
  /**
   * Fresh samples from the current π_θ for slot `slot`, one per record, every `every` steps
   * (SPO's intermittent sampling); the slot starts from the rows `rows` gives.
   */
  selfSamples?: (hp: H) => { slot: string; every: number; maxNewTokens: number };
  hparams: z.ZodType<H>;
  slots(hp: H): string[];
  /** One record → rows for each slot (the same count for every record of a round). */
  rows(record: RoundRecord, hp: H, draw: () => number): Record<string, Row[]>;
  /** The per-row loss [rows of the first slot]; the trainer averages it. */
  loss(slots: Record<string, SlotLogps>, hp: H): Tensor;
}

export const eta = z.number().positive().default(1);
export const beta = z.number().positive().default(0.1);
/** K for the recipes that rank several completions by win rate. */
export const k = z.number().int().min(2).default(5);

export function pairRows(
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

export function byWinRate(r: RoundRecord, includeSelf = true) {
  const rates = winRates(r.prefs, includeSelf);
  return { rates, ...winnerLoser(rates) };
}

/** Δ, optionally with log-probs divided by completion length (IPO's length normalisation). */
export function gap(s: Record<string, SlotLogps>, normalise = false): Tensor {
  const n = (x: SlotLogps, v: Tensor) => (normalise ? T.div(v, x.scalar('length')) : v);
  return logRatioGap({
    thetaW: n(s.w!, s.w!.theta),
    thetaL: n(s.l!, s.l!.theta),
    refW: n(s.w!, s.w!.ref!),
    refL: n(s.l!, s.l!.ref!),
  });
}

export function pairRecipe<H>(
  name: string,
  sampledFrom: Recipe['sampledFrom'],
  hparams: z.ZodType<H>,
  loss: (s: Record<string, SlotLogps>, hp: H) => Tensor,
): Recipe<H> {
  return {
    name,
    sampledFrom,
    completions: () => 2,
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

/** The same loss on a fixed preference dataset (chosen = completion 0, see `pairRecord`). */
export const offline = <H>(r: Recipe<H>, name: string): Recipe<H> => ({ ...r, name, sampledFrom: 'dataset' });

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
