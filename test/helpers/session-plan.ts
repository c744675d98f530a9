/** One client loop that the training-session tests replay: a tiny model, two batches, FB, FB, optim. */
import type { Datum, TrainingSessionHandle } from '../../src/client/training.js';
import { weights } from './model-fixtures.js';
import { ROUND_CONFIG, ROUND_RECORDS } from './round-fixtures.js';

export const SESSION_BASE_WEIGHTS = Object.fromEntries(
  Object.entries(weights(ROUND_CONFIG, 2, 'float32', 7)).map(([k, t]) => [
    k,
    { ...t, dtype: 'float32' as const },
  ]),
);
const ALL: Datum[] = ROUND_RECORDS.flatMap((r) =>
  r.completion_ids.map((c) => ({ promptIds: r.prompt_ids, completionIds: c })),
);
/** Two different batches, so a replayed call in the wrong order would show. */
export const BATCHES = [ALL.slice(0, 3), ALL.slice(2)];
export const SESSION_OPTIMIZER = { name: 'adamw', learningRate: 5e-3, gradClip: 1, weightDecay: 0.01 };
/** Calls in the plan. */
export const PLAN = 15;

/** The i-th call of the plan: forwardBackward on batch 0, on batch 1, then an optimizer step. */
export function planStep(s: TrainingSessionHandle, i: number): Promise<unknown> {
  return i % 3 === 2 ? s.optimStep() : s.forwardBackward('cross_entropy', BATCHES[i % 3]!);
}
