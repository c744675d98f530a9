/** Online IPO, IPO-MD and offline IPO (docs/algorithms.md): hard labels on winner/loser, soft labels on every ordered pair. */
import { z } from 'zod';
import { ipoLoss, ipoSoftLoss } from '../losses.js';
import { anyK, datasetOnly, mixture } from '../round-plan.js';
import { byWinRate, gap, pairRows } from './common.js';
import { defineRecipe, type Recipe, type Row } from './recipe.js';

const ipoHparams = z.strictObject({
  tau: z.number().positive().default(0.1),
  labels: z.enum(['hard', 'soft']).default('hard'),
  length_normalize: z.boolean().default(false),
  mixture_coef: z.number().min(0).max(1).default(0.5),
});

type PrefRow = Row<{ length: number; pref: number }>;

/** IPO whose completions come from π_θ (online_ipo), the mixture (ipo_md: both of two), or a dataset (ipo). */
export function ipoRecipe(name: string, sampledFrom: 'pi_theta' | 'mixture' | 'dataset'): Recipe {
  return defineRecipe({
    name,
    sampledFrom,
    hparams: ipoHparams,
    frozen: ['ref'],
    regularisation: (hp) => hp.tau,
    sampling(hp, requestedK) {
      if (sampledFrom === 'dataset') return datasetOnly(name);
      return sampledFrom === 'mixture' ? mixture(name, 0, 2, hp.mixture_coef, requestedK) : anyK(requestedK);
    },
    // Hard labels: the winner over the loser, surely (pref 1). Soft labels: every ordered pair
    // (y, y') with its preference as the target.
    rows(r, hp): { w: PrefRow[]; l: PrefRow[] } {
      if (hp.labels === 'hard') {
        const { winner, loser } = byWinRate(r);
        return pairRows(r, winner, loser, () => ({ pref: 1 }));
      }
      const w: PrefRow[] = [];
      const l: PrefRow[] = [];
      for (const [i, a] of r.completion_ids.entries())
        for (const [j, b] of r.completion_ids.entries()) {
          if (i === j) continue;
          w.push({
            promptIds: r.prompt_ids,
            completionIds: a,
            features: { length: a.length, pref: r.prefs[i]![j]! },
          });
          l.push({ promptIds: r.prompt_ids, completionIds: b, features: { length: b.length, pref: 0 } });
        }
      return { w, l };
    },
    loss: (s, hp) =>
      hp.labels === 'soft'
        ? ipoSoftLoss(gap(s, hp.length_normalize), s.w.features.pref, hp.tau)
        : ipoLoss(gap(s, hp.length_normalize), hp.tau),
  });
}
