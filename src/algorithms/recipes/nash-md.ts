/**
 * Nash-MD on the round's pair: completion 0 was sampled from π_θ (the round's policy), completion
 * 1 from the geometric mixture (1−m)·z_θ + m·z_ref; p = prefs[0][1]. Policy-gradient form with a ½
 * baseline and the sampled per-token KL term (losses.ts).
 */
import { z } from 'zod';
import { nashMdLoss } from '../losses.js';
import { beta, type Recipe } from './recipe.js';

export const nashMd: Recipe<{ beta: number; mixture_coef: number }> = {
  name: 'nash_md',
  sampledFrom: 'mixture',
  // one from π_θ (completion 0), one from the mixture (completion 1)
  completions: () => 2,
  needs: { t: false, ref: false, refTokens: true },
  hparams: z.strictObject({ beta, mixture_coef: z.number().min(0).max(1).default(0.5) }),
  slots: () => ['y'],
  rows: (r) => ({
    y: [{ promptIds: r.prompt_ids, completionIds: r.completion_ids[0]!, scalars: { p: r.prefs[0]![1]! } }],
  }),
  loss: (s, hp) => nashMdLoss(s.y!.tokTheta, s.y!.tokRef!, s.y!.mask, s.y!.scalar('p'), hp.beta),
};
