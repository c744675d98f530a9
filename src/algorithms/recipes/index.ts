/** Every round recipe by name, with hyper-parameter validation and --set parsing. */
import { DuelError } from '../../platform/errors.js';
import { onlineDiscopop, onlineDpo, onlineSlic } from './dpo-slic-discopop.js';
import { inpo } from './inpo.js';
import { ipoRecipe } from './ipo.js';
import { nashMd } from './nash-md.js';
import { offline, type Recipe } from './recipe.js';
import { sft } from './sft.js';
import { spo } from './spo.js';
import { sppo } from './sppo.js';

export { pairRecord, type Recipe, type RoundRecord, type Row, type SlotLogps } from './recipe.js';

export const RECIPES: Record<string, Recipe<never>> = Object.fromEntries(
  [
    sft,
    sppo,
    inpo,
    nashMd,
    spo,
    ipoRecipe('online_ipo', 'pi_theta'),
    ipoRecipe('ipo_md', 'mixture'),
    onlineDpo,
    onlineSlic,
    onlineDiscopop,
    // ALGORITHMS.md names the offline SLiC and DiscoPOP `slic` and `discopop` too: the recipe
    // is the same, only the data differs (chosen/rejected pairs instead of round samples).
    offline(onlineDpo, 'dpo'),
    offline(ipoRecipe('ipo', 'dataset'), 'ipo'),
  ].map((r) => [r.name, r as unknown as Recipe<never>]),
);

/** The recipe and its validated hyper-parameters; every problem names the key and the rule. */
export function recipeFor(algo: string, raw: Record<string, unknown>): { recipe: Recipe<never>; hp: never } {
  const recipe = RECIPES[algo];
  if (!recipe)
    throw DuelError.invalidArgument([
      {
        field: 'algo',
        description: `unknown algorithm '${algo}' (known: ${Object.keys(RECIPES).join(', ')})`,
      },
    ]);
  const parsed = recipe.hparams.safeParse(raw);
  if (!parsed.success)
    throw DuelError.invalidArgument(
      parsed.error.issues.map((i) => ({
        field: i.path.join('.') || 'hparams',
        description: `${algo}: ${i.message}`,
      })),
    );
  return { recipe, hp: parsed.data as never };
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
