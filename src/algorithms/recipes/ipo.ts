/** Online IPO, IPO-MD and offline IPO (ALGORITHMS.md): hard labels on winner/loser, soft labels on every ordered pair. */
import { z } from 'zod';
import { ipoLoss, ipoSoftLoss } from '../losses.js';
import { gap, pairRecipe, type Recipe, type Row } from './recipe.js';

const ipoHparams = z.strictObject({
  tau: z.number().positive().default(0.1),
  labels: z.enum(['hard', 'soft']).default('hard'),
  length_normalize: z.boolean().default(false),
  mixture_coef: z.number().min(0).max(1).default(0.5),
});
type IpoH = z.infer<typeof ipoHparams>;

export function ipoRecipe(name: string, sampledFrom: Recipe['sampledFrom']): Recipe<IpoH> {
  const hard = pairRecipe<IpoH>(name, sampledFrom, ipoHparams, (s, hp) =>
    ipoLoss(gap(s, hp.length_normalize), hp.tau),
  );
  return {
    ...hard,
    // Soft labels use every ordered pair (y, y') with its preference as the target.
    rows(r, hp, draw) {
      if (hp.labels === 'hard') return hard.rows(r, hp, draw);
      const w: Row[] = [];
      const l: Row[] = [];
      for (const [i, a] of r.completion_ids.entries())
        for (const [j, b] of r.completion_ids.entries()) {
          if (i === j) continue;
          w.push({
            promptIds: r.prompt_ids,
            completionIds: a,
            scalars: { length: a.length, pref: r.prefs[i]![j]! },
          });
          l.push({ promptIds: r.prompt_ids, completionIds: b, scalars: { length: b.length, pref: 0 } });
        }
      return { w, l };
    },
    loss: (s, hp) =>
      hp.labels === 'soft'
        ? ipoSoftLoss(gap(s, hp.length_normalize), s.w!.scalar('pref'), hp.tau)
        : ipoLoss(gap(s, hp.length_normalize), hp.tau),
  };
}
