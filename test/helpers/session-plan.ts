/** One client loop that the training-session tests replay: a tiny model, two batches, FB, FB, optim. */
import type { Datum, TrainingSessionHandle } from '../../src/client/training.js';
import { weights } from './model-fixtures.js';
import { ROUND_CONFIG, ROUND_SEQUENCES } from './round-fixtures.js';

export const SESSION_BASE_WEIGHTS = Object.fromEntries(
  Object.entries(weights(ROUND_CONFIG, 2, 'float32', 7)).map(([k, t]) => [
    k,
    { ...t, dtype: 'float32' as const },
  ]),
);
/** Two different batches, so a replayed call in the wrong order would show. */
export const BATCHES: Datum[][] = [ROUND_SEQUENCES.slice(0, 3), ROUND_SEQUENCES.slice(2)];
export const SESSION_OPTIMIZER = { name: 'adamw', learningRate: 5e-3, gradClip: 1, weightDecay: 0.01 };
/** Calls in the plan. */
export const PLAN = 15;

/** The i-th call of the plan: forwardBackward on batch 0, on batch 1, then an optimizer step. */
export function planStep(s: TrainingSessionHandle, i: number): Promise<unknown> {
  return i % 3 === 2 ? s.optimStep() : s.forwardBackward('cross_entropy', BATCHES[i % 3]!);
}
