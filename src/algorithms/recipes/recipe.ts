/**
 * What every round recipe is made of. A recipe is data plus two pure functions: who samples its
 * completions and how many (its sampling plan), which frozen log-probs its loss reads (π_t, π_ref),
 * its hyper-parameters with defaults and allowed ranges, how a round record becomes training rows,
 * and its loss over those rows. The trainer (../train-round.ts) is generic over recipes; the losses
 * themselves live in ../losses.ts.
 *
 * Rows come in named slots (e.g. `w` and `l`, one row each per record); every slot of a recipe has
 * the same number of rows per record, so a batch of B records is B·m rows per slot. A recipe is
 * written against its own types — its hyper-parameters H, its slots and per-row features S, the
 * frozen inputs Z it declares — so a misspelt slot, feature or frozen input is a compile error;
 * `defineRecipe` binds those types once, behind the untyped surface that callers look recipes up by.
 */
import type { z } from 'zod';
import type { Tensor } from '../../engine/index.js';
import { DuelError } from '../../errors.js';
import type { SamplingPlan } from '../round-plan.js';

export interface RoundRecord {
  prompt_ids: number[];
  completion_ids: number[][];
  prefs: number[][];
  /**
   * Only for a record drawn from an older policy than the one trained (a run's max_staleness ≥ 1):
   * each completion's summed log-prob under the policy that drew it.
   */
  behaviour_logprobs?: number[];
}

/** Per-row numbers a loss reads: one number per row ([R] in the graph) or one vector ([R, n]). */
export type Features = Record<string, number | readonly number[]>;

export interface Row<F extends Features = Features> {
  promptIds: number[];
  completionIds: number[];
  features: F;
}

/**
 * The frozen log-probs a loss may read of a slot's rows, computed once before the round's first
 * step from the model named here (`policy`: π_t, the round's starting weights).
 */
export const FROZEN = {
  /** π_t's summed log-prob of each row's completion, [R]. */
  t: { model: 'policy', per: 'row' },
  /** π_ref's summed log-prob, [R]. */
  ref: { model: 'reference', per: 'row' },
  /** π_ref's per-token log-probs, [R, T], aligned with `tokTheta` (0 off the completion). */
  refTokens: { model: 'reference', per: 'token' },
} as const;
export type Frozen = keyof typeof FROZEN;

/** What a recipe's loss sees of one slot: θ's log-probs, the features and the frozen inputs it declared. */
export type SlotLogps<F extends Features = Features, Z extends Frozen = Frozen> = {
  /** θ's summed log-prob of each row's completion, [R]. */
  theta: Tensor;
  /** θ's per-token log-probs [R, T] (0 off the completion) and the completion mask. */
  tokTheta: Tensor;
  mask: Tensor;
  features: { readonly [K in keyof F]: Tensor };
} & { readonly [K in Z]: Tensor };

export type SlotRows = Record<string, Row<Features>[]>;

/** The loss's view of the slots `rows` returned: slot by slot, with each slot's own features. */
export type SlotsOf<S extends SlotRows, Z extends Frozen> = S extends unknown
  ? { [K in keyof S]: S[K] extends Row<infer F>[] ? SlotLogps<F, Z> : never }
  : never;

export type SampledFrom = 'pi_t' | 'pi_theta' | 'mixture' | 'dataset';

/** SPO-style intermittent sampling: fresh rows for `slot` from the current θ every `every` steps. */
export interface SelfSamples<Slot extends string = string> {
  slot: Slot;
  every: number;
  maxNewTokens: number;
}

/** A recipe as its author writes it. */
export interface RecipeSpec<H, S extends SlotRows, Z extends Frozen> {
  name: string;
  /** Who samples the round's completions (for the docs and the tables). */
  sampledFrom: SampledFrom;
  hparams: z.ZodType<H>;
  /** Frozen inputs the loss reads; the trainer computes exactly these. */
  frozen: readonly Z[];
  /** Whether records must carry a K×K `prefs`. @default true */
  needsPrefs?: boolean;
  /** What a round samples per prompt; `requestedK` is the run's samples_per_prompt (0: the recipe's own). */
  sampling(hp: H, requestedK: number): SamplingPlan;
  /** One record → rows for each slot (the same count for every record of a round). */
  rows(record: RoundRecord, hp: H, draw: () => number): S;
  /** The per-row loss [rows of the first slot]; the trainer averages it. */
  loss(slots: SlotsOf<S, Z>, hp: H): Tensor;
  selfSamples?: (hp: H) => SelfSamples<keyof S & string>;
  /**
   * How strongly the loss pulls toward π_ref: the τ of the regularised equilibrium
   * π ∝ π_ref·exp(P(y ≻ π)/τ) it converges to (INPO's and IPO's τ, β for Nash-MD and the DPO
   * family). Absent: no pull toward π_ref (SPPO, SPO), τ = 0.
   */
  regularisation?: (hp: H) => number;
  /**
   * The loss is a score-function (policy-gradient) estimate whose expectation is over samples of
   * π_θ itself: samples of an older policy (a run's max_staleness ≥ 1) would need importance
   * weights, which duel does not apply, so such a run is refused. @default false
   */
  onPolicyEstimator?: boolean;
}

/** A recipe with validated hyper-parameters: everything the trainer and orchestrator call. */
export interface ConfiguredRecipe {
  readonly recipe: Recipe;
  /** The validated hyper-parameters, defaults filled in. */
  readonly hp: Readonly<Record<string, unknown>>;
  sampling(requestedK: number): SamplingPlan;
  rows(record: RoundRecord, draw: () => number): SlotRows;
  loss(slots: Record<string, SlotLogps>): Tensor;
  readonly selfSamples: SelfSamples | undefined;
  /** The τ of the regularised equilibrium the loss converges to; 0 when it has no pull toward π_ref. */
  readonly regularisation: number;
}

/** A recipe as callers look it up by name: its types are bound inside `configure`. */
export interface Recipe {
  readonly name: string;
  readonly sampledFrom: SampledFrom;
  readonly frozen: readonly Frozen[];
  readonly needsPrefs: boolean;
  /** Whether the loss reads π_ref (so a run's reference can move, and the trainer needs one). */
  readonly usesReference: boolean;
  /** RecipeSpec.onPolicyEstimator: the round's records must come from the policy it trains. */
  readonly onPolicyEstimator: boolean;
  /** Validates raw hyper-parameters; every problem names the key and the rule. */
  configure(raw: Record<string, unknown>): ConfiguredRecipe;
}

export function defineRecipe<H, S extends SlotRows, Z extends Frozen>(spec: RecipeSpec<H, S, Z>): Recipe {
  const recipe: Recipe = {
    name: spec.name,
    sampledFrom: spec.sampledFrom,
    frozen: spec.frozen,
    needsPrefs: spec.needsPrefs ?? true,
    usesReference: spec.frozen.some((z) => FROZEN[z].model === 'reference'),
    onPolicyEstimator: spec.onPolicyEstimator ?? false,
    configure(raw) {
      const parsed = spec.hparams.safeParse(raw);
      if (!parsed.success)
        throw DuelError.invalidArgument(
          parsed.error.issues.map((i) => ({
            field: i.path.join('.') || 'hparams',
            description: `${spec.name}: ${i.message}`,
          })),
        );
      const hp = parsed.data;
      return {
        recipe,
        hp: hp as Record<string, unknown>,
        sampling: (requestedK) => spec.sampling(hp, requestedK),
        rows: (record, draw) => spec.rows(record, hp, draw),
        // The trainer builds one SlotLogps per slot that `rows` returned, with those rows' features
        // and the frozen inputs the spec declared: the shape SlotsOf<S, Z> describes.
        loss: (slots) => spec.loss(slots as unknown as SlotsOf<S, Z>, hp),
        selfSamples: spec.selfSamples?.(hp),
        regularisation: spec.regularisation?.(hp) ?? 0,
      };
    },
  };
  return recipe;
}
