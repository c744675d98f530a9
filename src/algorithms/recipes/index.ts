/** Every round recipe by name, the one place an algorithm's name is looked up; and --set parsing. */
import { DuelError } from '../../errors.js';
import { distinctRounds, scheduledKeys } from '../schedule.js';
import { discopop, dpo, onlineDpo, slic } from './dpo-slic-discopop.js';
import { inpo } from './inpo.js';
import { ipoRecipe } from './ipo.js';
import { nashMd } from './nash-md.js';
import type { ConfiguredRecipe, Recipe } from './recipe.js';
import { sft } from './sft.js';
import { spo } from './spo.js';
import { sppo } from './sppo.js';

export { pairRecord } from './common.js';
export type { ConfiguredRecipe, Recipe, RoundRecord, Row, SlotLogps } from './recipe.js';

// docs/algorithms.md names the offline SLiC and DiscoPOP `slic` and `discopop` too: the recipe is the
// same, only the data differs (chosen/rejected pairs instead of round samples).
export const RECIPES: Readonly<Record<string, Recipe>> = Object.fromEntries(
  [
    sft,
    sppo,
    inpo,
    nashMd,
    spo,
    ipoRecipe('online_ipo', 'pi_theta'),
    ipoRecipe('ipo_md', 'mixture'),
    onlineDpo,
    slic,
    discopop,
    dpo,
    ipoRecipe('ipo', 'dataset'),
  ].map((r) => [r.name, r]),
);

/** The recipe `algo` with validated hyper-parameters; every problem names the key and the rule. */
export function recipeFor(algo: string, raw: Record<string, unknown>): ConfiguredRecipe {
  const recipe = RECIPES[algo];
  if (!recipe)
    throw DuelError.invalidArgument([
      {
        field: 'algo',
        description: `unknown algorithm '${algo}' (known: ${Object.keys(RECIPES).join(', ')})`,
      },
    ]);
  return recipe.configure(raw);
}

/** `key=value` strings (from --set) as typed values: numbers, booleans, else strings. */
export function parseSets(sets: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const s of sets) {
    const at = s.indexOf('=');
    if (at <= 0)
      throw DuelError.invalidArgument([{ field: '--set', description: `'${s}' is not key=value` }]);
    const [k, v] = [s.slice(0, at), s.slice(at + 1)];
    out[k] =
      v === 'true'
        ? true
        : v === 'false'
          ? false
          : v.trim() !== '' && Number.isFinite(Number(v))
            ? Number(v)
            : v;
  }
  return out;
}

/**
 * Every distinct round's recipe, round 1 first (`distinctRounds`): each round's values pass the
 * recipe, and a round it refuses (e.g. INPO's η·τ < 1) is named in the error's field.
 */
export function recipesByRound(
  algo: string,
  hp: Record<string, string>,
  rounds: number,
  fieldPrefix = 'hyperparameters',
): ConfiguredRecipe[] {
  const scheduled = scheduledKeys(hp, fieldPrefix).length > 0;
  return distinctRounds(hp, rounds, fieldPrefix).map((at, i) => {
    try {
      return recipeFor(algo, parseSets(Object.entries(at).map(([k, v]) => `${k}=${v}`)));
    } catch (e) {
      if (!(e instanceof DuelError) || !scheduled) throw e;
      throw DuelError.invalidArgument(
        e.violations.map((x) => ({ ...x, field: `${fieldPrefix}.${x.field} (round ${i + 1})` })),
      );
    }
  });
}
