/**
 * INPO (docs/algorithms.md): pairs from π_t, (h − η/2)² with the π_ref and π_t pulls of online mirror
 * descent, on the winner and loser by win rate, on the first two labelled by a Bernoulli draw, or
 * (`soft`) on every pair of the K completions with the label's expectation as the target.
 */
import { z } from 'zod';
import { DuelError } from '../../errors.js';
import { inpoAllPairsLoss, inpoLoss } from '../losses.js';
import { ownK } from '../round-plan.js';
import { byWinRate, eta, k, noFeatures, pairRows } from './common.js';
import { defineRecipe, type Features } from './recipe.js';

export const inpo = defineRecipe({
  name: 'inpo',
  sampledFrom: 'pi_t',
  hparams: z
    .strictObject({
      eta,
      k,
      tau: z.number().positive().default(0.1),
      inpo_labels: z.enum(['winner', 'sampled', 'soft']).default('winner'),
    })
    .refine((h) => h.eta * h.tau < 1, { message: 'eta·tau must be below 1', path: ['tau'] }),
  frozen: ['t', 'ref'],
  sampling: (hp, requestedK) => ownK('inpo', hp.k, requestedK),
  regularisation: (hp) => hp.tau,
  rows(r, hp, draw) {
    if (hp.inpo_labels === 'soft') {
      if (r.completion_ids.length !== hp.k)
        throw DuelError.invalidArgument([
          {
            field: 'data',
            description: `inpo with soft labels pairs the k = ${hp.k} completions of a prompt; a record has ${r.completion_ids.length}`,
          },
        ]);
      // Row i carries its row of the preference matrix, P(y_i ≻ y_j) for every j, as one vector;
      // from an older policy, also its log-prob under that policy (the loss's importance weights).
      const b = r.behaviour_logprobs;
      return {
        all: r.completion_ids.map((c, i) => ({
          promptIds: r.prompt_ids,
          completionIds: c,
          features: { position: i, prefs: r.prefs[i]!, ...(b ? { behaviour: b[i]! } : {}) } as Features,
        })),
      };
    }
    if (hp.inpo_labels === 'winner') {
      const { winner, loser } = byWinRate(r);
      return pairRows(r, winner, loser, noFeatures);
    }
    // The first two completions, labelled by a Bernoulli draw with probability prefs[0][1].
    return draw() < r.prefs[0]![1]! ? pairRows(r, 0, 1, noFeatures) : pairRows(r, 1, 0, noFeatures);
  },
  loss(s, hp) {
    if ('all' in s) {
      const a = s.all;
      const f = a.features;
      return inpoAllPairsLoss(
        {
          theta: a.theta,
          ref: a.ref,
          t: a.t,
          prefs: f.prefs!,
          position: f.position!,
          // A feature becomes a graph input when read: only rounds of stale records read this one.
          ...('behaviour' in f ? { behaviour: f.behaviour! } : {}),
        },
        hp.k,
        hp.eta,
        hp.tau,
      );
    }
    return inpoLoss(
      { thetaW: s.w.theta, thetaL: s.l.theta, refW: s.w.ref, refL: s.l.ref, tW: s.w.t, tL: s.l.t },
      hp.eta,
      hp.tau,
    );
  },
});
