/**
 * SPO, Soft Preference Optimization (docs/algorithms.md; duel's reading of the paper's abstract):
 * a preference term without a reference ratio, softplus(−α·[logp_θ(y_w) − logp_θ(y_l)]), plus a
 * global KL regulariser on the model's own samples in score-function form,
 * λ·sg(logp_θ(y) − logp_ref(y))·logp_θ(y). The samples start as the round's first completion
 * (drawn from π_θ by the sampler) and are redrawn from the current weights every
 * `resample_every` steps ("intermittent sampling"). Each part has its own key.
 */
import { z } from 'zod';
import { T } from '../../engine/index.js';
import { spoKlLoss, spoPreferenceLoss } from '../losses.js';
import { anyK } from '../round-plan.js';
import { byWinRate, noFeatures, pairRows } from './common.js';
import { defineRecipe } from './recipe.js';

export const spo = defineRecipe({
  name: 'spo',
  sampledFrom: 'pi_theta',
  hparams: z.strictObject({
    alpha: z.number().positive().default(1),
    kl_coef: z.number().min(0).default(0.1),
    resample_every: z.number().int().positive().default(8),
    sample_max_new_tokens: z.number().int().positive().default(32),
  }),
  frozen: ['ref'],
  sampling: (_hp, requestedK) => anyK(requestedK),
  selfSamples: (hp) => ({ slot: 'kl', every: hp.resample_every, maxNewTokens: hp.sample_max_new_tokens }),
  rows(r) {
    const { winner, loser } = byWinRate(r);
    const sample = { promptIds: r.prompt_ids, completionIds: r.completion_ids[0]!, features: {} };
    return { ...pairRows(r, winner, loser, noFeatures), kl: [sample] };
  },
  loss: (s, hp) =>
    T.add(spoPreferenceLoss(s.w.theta, s.l.theta, hp.alpha), spoKlLoss(s.kl.theta, s.kl.ref, hp.kl_coef)),
});
