/** SPPO (docs/algorithms.md): K completions from π_t, (ℓ − η(P̂ − ½))² on the winner and loser, or on all K. */
import { z } from 'zod';
import { T } from '../../engine/index.js';
import { sppoLoss } from '../losses.js';
import { ownK } from '../round-plan.js';
import { byWinRate, eta, k, pairRows } from './common.js';
import { defineRecipe, type SlotLogps } from './recipe.js';

export const sppo = defineRecipe({
  name: 'sppo',
  sampledFrom: 'pi_t',
  hparams: z.strictObject({
    eta,
    k,
    sppo_pairs: z.enum(['winner_loser', 'all']).default('winner_loser'),
    include_self: z.boolean().default(true),
  }),
  frozen: ['t'],
  sampling: (hp, requestedK) => ownK('sppo', hp.k, requestedK),
  rows(r, hp) {
    const { rates, winner, loser } = byWinRate(r, hp.include_self);
    if (hp.sppo_pairs === 'all')
      return {
        all: r.completion_ids.map((c, i) => ({
          promptIds: r.prompt_ids,
          completionIds: c,
          features: { p: rates[i]! },
        })),
      };
    return pairRows(r, winner, loser, (i) => ({ p: rates[i]! }));
  },
  // winner_loser: ½[(…)_w² + (…)_l²] = the mean of the two squares; all: the mean of K squares.
  loss(s, hp) {
    const sq = (x: SlotLogps<{ p: number }, 't'>) => sppoLoss(x.theta, x.t, x.features.p, hp.eta);
    return 'all' in s ? sq(s.all) : T.mul(T.add(sq(s.w), sq(s.l)), 0.5);
  },
});
