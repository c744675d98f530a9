/**
 * SFT as a recipe: every completion of a record is a row; the loss is the mean token
 * cross-entropy over all completion tokens of the batch (−Σ logp / Σ length, written per row so
 * the trainer's mean over rows gives exactly that).
 */
import { z } from 'zod';
import { T } from '../../engine/index.js';
import type { Recipe } from './recipe.js';

export const sft: Recipe<Record<string, never>> = {
  name: 'sft',
  sampledFrom: 'dataset',
  completions: () => 1,
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
