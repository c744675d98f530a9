/**
 * Nash-MD on the round's pair: completion 0 was sampled from π_θ (the round's policy), completion
 * 1 from the geometric mixture (1−m)·z_θ + m·z_ref; p = prefs[0][1]. Policy-gradient form with a ½
 * baseline and the sampled per-token KL term (losses.ts).
 */
import { z } from 'zod';
import { nashMdLoss } from '../losses.js';
import { mixture } from '../round-plan.js';
import { beta } from './common.js';
import { defineRecipe } from './recipe.js';

export const nashMd = defineRecipe({
  name: 'nash_md',
  sampledFrom: 'mixture',
  hparams: z.strictObject({ beta, mixture_coef: z.number().min(0).max(1).default(0.5) }),
  frozen: ['refTokens'],
  // One policy sample (completion 0) contrasted with one mixture sample (completion 1).
  sampling: (hp, requestedK) => mixture('nash_md', 1, 1, hp.mixture_coef, requestedK),
  regularisation: (hp) => hp.beta,
  // Its gradient is REINFORCE's over y ~ π_θ: stale samples bias it (docs/algorithms.md "Staleness").
  onPolicyEstimator: true,
  rows: (r) => ({
    y: [{ promptIds: r.prompt_ids, completionIds: r.completion_ids[0]!, features: { p: r.prefs[0]![1]! } }],
  }),
  loss: (s, hp) => nashMdLoss(s.y.tokTheta, s.y.refTokens, s.y.mask, s.y.features.p, hp.beta),
});
