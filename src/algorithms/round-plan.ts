/**
 * What a self-play round samples for an algorithm: how many completions per prompt come from the
 * round's policy π_t and how many from the geometric mixture with π_ref (ALGORITHMS.md). The
 * orchestrator asks the sampler for exactly this, in this order, so that completion i of a round
 * record is where the recipe expects it (Nash-MD reads completion 0 as π_θ's, 1 as the mixture's).
 */
import { DuelError } from '../platform/errors.js';
import type { Recipe } from './recipes/index.js';

export interface SamplingPlan {
  /** Completions per prompt from π_t (first in the record). */
  fromPolicy: number;
  /** Completions per prompt from the mixture (after the policy's). */
  fromMixture: number;
  /** m in (1−m)·z_θ + m·z_ref. */
  mixtureCoef: number;
  /** fromPolicy + fromMixture: the K of the round's K×K preference matrices. */
  k: number;
}

/**
 * The plan for `recipe` with validated hyper-parameters `hp`. `requestedK` (0: the recipe's own)
 * lets pair recipes draw more than two completions and train on the judge's winner and loser.
 */
export function samplingPlan(recipe: Recipe<never>, hp: never, requestedK = 0): SamplingPlan {
  const own = recipe.completions(hp);
  const bad = (description: string) =>
    DuelError.invalidArgument([{ field: 'samples_per_prompt', description }]);
  const m = (hp as { mixture_coef?: number }).mixture_coef ?? 0.5;
  switch (recipe.sampledFrom) {
    case 'dataset':
      throw DuelError.invalidArgument([
        {
          field: 'algorithm',
          description: `'${recipe.name}' trains on a fixed dataset; a run drives online algorithms (use duel train)`,
        },
      ]);
    case 'mixture': {
      if (requestedK !== 0 && requestedK !== own)
        throw bad(`${recipe.name} draws exactly ${own} completions per prompt, got ${requestedK}`);
      // Nash-MD contrasts one policy sample with one mixture sample; IPO-MD draws both from the mixture.
      const fromPolicy = recipe.name === 'nash_md' ? 1 : 0;
      return { fromPolicy, fromMixture: own - fromPolicy, mixtureCoef: m, k: own };
    }
    default: {
      // Recipes with a K hyper-parameter (SPPO, INPO) own it; pair recipes take any K ≥ 2.
      const hasK = (hp as { k?: number }).k !== undefined;
      if (hasK && requestedK !== 0 && requestedK !== own)
        throw bad(`${recipe.name} sets K with its hyper-parameter k (= ${own}); got ${requestedK}`);
      const k = hasK || requestedK === 0 ? own : requestedK;
      if (k < 2) throw bad(`must be at least 2, got ${k}`);
      return { fromPolicy: k, fromMixture: 0, mixtureCoef: m, k };
    }
  }
}
