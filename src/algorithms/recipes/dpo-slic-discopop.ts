/** Online DPO, SLiC and DiscoPOP on the judge's winner and loser (docs/algorithms.md); their offline use reads chosen/rejected pairs. */
import { z } from 'zod';
import { discopopLoss, dpoLoss, slicLoss } from '../losses.js';
import { beta, gap, pairRecipe } from './common.js';

const dpoHparams = z.strictObject({ beta, label_smoothing: z.number().min(0).max(0.5).default(0) });

export const onlineDpo = pairRecipe('online_dpo', 'pi_theta', dpoHparams, (s, hp) =>
  dpoLoss(gap(s), hp.beta, hp.label_smoothing),
);
export const dpo = pairRecipe('dpo', 'dataset', dpoHparams, (s, hp) =>
  dpoLoss(gap(s), hp.beta, hp.label_smoothing),
);
export const slic = pairRecipe('slic', 'pi_theta', z.strictObject({ beta }), (s, hp) =>
  slicLoss(gap(s), hp.beta),
);
export const discopop = pairRecipe(
  'discopop',
  'pi_theta',
  z.strictObject({ beta: z.number().positive().default(0.05), tau: z.number().positive().default(0.05) }),
  (s, hp) => discopopLoss(gap(s), hp.beta, hp.tau),
);
