/**
 * INPO (ALGORITHMS.md): pairs from π_t, (h − η/2)² with the π_ref and π_t pulls of online mirror
 * descent, on the winner and loser by win rate, on the first two labelled by a Bernoulli draw, or
 * (`soft`) on every pair of the K completions with the label's expectation as the target.
 */
import { z } from 'zod';
import { T } from '../../engine/index.js';
import { DuelError } from '../../platform/errors.js';
import { inpoAllPairsLoss, inpoLoss } from '../losses.js';
import { byWinRate, eta, k, pairRows, type Recipe } from './recipe.js';

type InpoH = { eta: number; k: number; tau: number; inpo_labels: 'winner' | 'sampled' | 'soft' };

/** Scalar names of the soft rows: `pref<j>` holds P(y_i ≻ y_j) for completion j of the record. */
const prefName = (j: number) => `pref${j}`;

export const inpo: Recipe<InpoH> = {
  name: 'inpo',
  sampledFrom: 'pi_t',
  completions: (hp) => hp.k,
  needs: { t: true, ref: true },
  hparams: z
    .strictObject({
      eta,
      k,
      tau: z.number().positive().default(0.1),
      inpo_labels: z.enum(['winner', 'sampled', 'soft']).default('winner'),
    })
    .refine((h) => h.eta * h.tau < 1, { message: 'eta·tau must be below 1', path: ['tau'] }),
  slots: (hp) => (hp.inpo_labels === 'soft' ? ['all'] : ['w', 'l']),
  rows(r, hp, draw) {
    if (hp.inpo_labels === 'soft') {
      if (r.completion_ids.length !== hp.k)
        throw DuelError.invalidArgument([
          {
            field: 'data',
            description: `inpo with soft labels pairs the k = ${hp.k} completions of a prompt; a record has ${r.completion_ids.length}`,
          },
        ]);
      return {
        all: r.completion_ids.map((c, i) => ({
          promptIds: r.prompt_ids,
          completionIds: c,
          scalars: {
            position: i,
            ...Object.fromEntries(r.completion_ids.map((_, j) => [prefName(j), r.prefs[i]![j]!])),
          },
        })),
      };
    }
    if (hp.inpo_labels === 'winner') {
      const { winner, loser } = byWinRate(r);
      return pairRows(r, winner, loser);
    }
    // The first two completions, labelled by a Bernoulli draw with probability prefs[0][1].
    return draw() < r.prefs[0]![1]! ? pairRows(r, 0, 1) : pairRows(r, 1, 0);
  },
  loss(s, hp) {
    if (s.all) {
      const a = s.all;
      const prefs = T.concat(
        Array.from({ length: hp.k }, (_, j) => T.unsqueeze(a.scalar(prefName(j)), [1])),
        1,
      );
      return inpoAllPairsLoss(
        { theta: a.theta, ref: a.ref!, t: a.t!, prefs, position: a.scalar('position') },
        hp.k,
        hp.eta,
        hp.tau,
      );
    }
    return inpoLoss(
      { thetaW: s.w!.theta, thetaL: s.l!.theta, refW: s.w!.ref!, refL: s.l!.ref!, tW: s.w!.t!, tL: s.l!.t! },
      hp.eta,
      hp.tau,
    );
  },
};
