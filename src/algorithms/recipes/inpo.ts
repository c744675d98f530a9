/** INPO (ALGORITHMS.md): pairs from π_t, (h − η/2)² with the π_ref and π_t pulls of online mirror descent. */
import { z } from 'zod';
import { inpoLoss } from '../losses.js';
import { byWinRate, eta, k, pairRows, type Recipe } from './recipe.js';

export const inpo: Recipe<{ eta: number; k: number; tau: number; inpo_labels: 'winner' | 'sampled' }> = {
  name: 'inpo',
  sampledFrom: 'pi_t',
  completions: (hp) => hp.k,
  needs: { t: true, ref: true },
  hparams: z
    .strictObject({
      eta,
      k,
      tau: z.number().positive().default(0.1),
      inpo_labels: z.enum(['winner', 'sampled']).default('winner'),
    })
    .refine((h) => h.eta * h.tau < 1, { message: 'eta·tau must be below 1', path: ['tau'] }),
  slots: () => ['w', 'l'],
  rows(r, hp, draw) {
    if (hp.inpo_labels === 'winner') {
      const { winner, loser } = byWinRate(r);
      return pairRows(r, winner, loser);
    }
    // The first two completions, labelled by a Bernoulli draw with probability prefs[0][1].
    return draw() < r.prefs[0]![1]! ? pairRows(r, 0, 1) : pairRows(r, 1, 0);
  },
  loss: (s, hp) =>
    inpoLoss(
      { thetaW: s.w!.theta, thetaL: s.l!.theta, refW: s.w!.ref!, refL: s.l!.ref!, tW: s.w!.t!, tL: s.l!.t! },
      hp.eta,
      hp.tau,
    ),
};
