/**
 * What a self-play round samples: how many completions per prompt come from the round's policy π_t
 * and how many from the geometric mixture with π_ref (docs/algorithms.md). Each recipe states its plan
 * with one of the builders below; the orchestrator asks the sampler for exactly that, in that
 * order, so that completion i of a round record is where the recipe expects it (Nash-MD reads
 * completion 0 as π_θ's, 1 as the mixture's).
 */
import { DuelError } from '../errors.js';

export interface SamplingPlan {
  /** Completions per prompt from π_t (first in the record). */
  fromPolicy: number;
  /** Completions per prompt from the mixture (after the policy's). */
  fromMixture: number;
  /** m in (1−m)·z_θ + m·z_ref; 0 when nothing comes from the mixture. */
  mixtureCoef: number;
  /** fromPolicy + fromMixture: the K of the round's K×K preference matrices. */
  k: number;
}

const bad = (description: string) =>
  DuelError.invalidArgument([{ field: 'samples_per_prompt', description }]);

/** K completions from π_t, K set by the recipe's own hyper-parameter (SPPO's and INPO's `k`). */
export function ownK(name: string, k: number, requestedK: number): SamplingPlan {
  if (requestedK !== 0 && requestedK !== k)
    throw bad(`${name} sets K with its hyper-parameter k (= ${k}); got ${requestedK}`);
  return { fromPolicy: k, fromMixture: 0, mixtureCoef: 0, k };
}

/** Any K ≥ 2 completions from π_t (2 unless asked): pair recipes train on the judge's winner and loser. */
export function anyK(requestedK: number): SamplingPlan {
  const k = requestedK === 0 ? 2 : requestedK;
  if (k < 2) throw bad(`must be at least 2, got ${k}`);
  return { fromPolicy: k, fromMixture: 0, mixtureCoef: 0, k };
}

/** Exactly `fromPolicy` completions from π_t then `fromMixture` from the mixture with coefficient `coef`. */
export function mixture(
  name: string,
  fromPolicy: number,
  fromMixture: number,
  coef: number,
  requestedK: number,
): SamplingPlan {
  const k = fromPolicy + fromMixture;
  if (requestedK !== 0 && requestedK !== k)
    throw bad(`${name} draws exactly ${k} completions per prompt, got ${requestedK}`);
  return { fromPolicy, fromMixture, mixtureCoef: coef, k };
}

/** Offline recipes have no round to sample: a run cannot drive them. */
export function datasetOnly(name: string): never {
  throw DuelError.invalidArgument([
    {
      field: 'algorithm',
      description: `'${name}' trains on a fixed dataset; a run drives online algorithms (use duel train)`,
    },
  ]);
}
