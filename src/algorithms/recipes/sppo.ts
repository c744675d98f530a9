/** SPPO (ALGORITHMS.md): K completions from π_t, (ℓ − η(P̂ − ½))² on the winner and loser, or on all K. */
import { z } from 'zod';
import { T } from '../../engine/index.js';
import { sppoLoss } from '../losses.js';
import { byWinRate, eta, k, pairRows, type Recipe, type SlotLogps } from './recipe.js';

export const sppo: Recipe<{
  eta: number;
  k: number;
  sppo_pairs: 'winner_loser' | 'all';
  include_self: boolean;
}> = {
  name: 'sppo',
  sampledFrom: 'pi_t',
  completions: (hp) => hp.k,
  needs: { t: true, ref: false },
  hparams: z.strictObject({
    eta,
    k,
    sppo_pairs: z.enum(['winner_loser', 'all']).default('winner_loser'),
    include_self: z.boolean().default(true),
  }),
  slots: (hp) => (hp.sppo_pairs === 'all' ? ['all'] : ['w', 'l']),
  rows(r, hp) {
    const { rates, winner, loser } = byWinRate(r, hp.include_self);
    if (hp.sppo_pairs === 'all')
      return {
        all: r.completion_ids.map((c, i) => ({
          promptIds: r.prompt_ids,
          completionIds: c,
          scalars: { p: rates[i]! },
        })),
      };
    return pairRows(r, winner, loser, (i) => ({ p: rates[i]! }));
  },
  // winner_loser: ½[(…)_w² + (…)_l²] = the mean of the two squares; all: the mean of K squares.
  loss(s, hp) {
    const sq = (x: SlotLogps) => sppoLoss(x.theta, x.t!, x.scalar('p'), hp.eta);
    return s.all ? sq(s.all) : T.mul(T.add(sq(s.w!), sq(s.l!)), 0.5);
  },
};
