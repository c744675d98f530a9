/** SFT as a recipe: every completion of a record is a row; the loss is sftLoss over the batch's completion tokens. */
import { z } from 'zod';
import { sftLoss } from '../losses.js';
import { datasetOnly } from '../round-plan.js';
import { defineRecipe } from './recipe.js';

export const sft = defineRecipe({
  name: 'sft',
  sampledFrom: 'dataset',
  hparams: z.strictObject({}),
  frozen: [],
  needsPrefs: false,
  sampling: () => datasetOnly('sft'),
  rows: (r) => ({
    y: r.completion_ids.map((c) => ({ promptIds: r.prompt_ids, completionIds: c, features: {} })),
  }),
  loss: (s) => sftLoss(s.y.tokTheta, s.y.mask),
});
