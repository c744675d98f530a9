/**
 * Per-round hyper-parameter schedules. A hyper-parameter's value may be a list, one entry per
 * round, the last repeating: `eta=8x4,2` is η = 8 for rounds 1–4 and 2 from round 5 on. Self-play
 * needs this because one step size serves its two sub-games badly at once: the transitive part
 * (quality) wants a large step, the cyclic part (styles) a small one (docs/RESULTS.md).
 *
 * The orchestrator resolves the schedule and sends each round's trainer plain values, so the
 * trainer and the recipes never see a list.
 */
import { DuelError } from '../errors.js';

const ENTRY = /^\s*(-?[0-9.eE+-]+)\s*(?:x\s*([0-9]+)\s*)?$/;

/** The per-round values of a schedule string, or undefined when `raw` is a plain value. */
export function parseSchedule(field: string, raw: string): number[] | undefined {
  if (!raw.includes(',') && !/x\s*[0-9]+\s*$/.test(raw)) return undefined;
  const values: number[] = [];
  for (const part of raw.split(',')) {
    const m = ENTRY.exec(part);
    const v = m ? Number(m[1]) : Number.NaN;
    const times = m?.[2] === undefined ? 1 : Number(m[2]);
    if (!m || !Number.isFinite(v) || times < 1 || times > 100_000)
      throw DuelError.invalidArgument([
        {
          field,
          description: `'${part.trim()}' is not a schedule entry: a schedule is numbers separated by commas, each optionally repeated with xN (e.g. 8x4,2)`,
        },
      ]);
    for (let i = 0; i < times; i++) values.push(v);
  }
  return values;
}

/** Every scheduled key's per-round values, parsed once. */
function schedulesOf(hp: Record<string, string>, fieldPrefix: string): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const [k, v] of Object.entries(hp)) {
    const s = parseSchedule(`${fieldPrefix}.${k}`, v);
    if (s) out.set(k, s);
  }
  return out;
}

/** `hp` with each scheduled key set to its entry for `round`, or its last one past the end. */
function valuesAt(hp: Record<string, string>, schedules: Map<string, number[]>, round: number) {
  const at = { ...hp };
  for (const [k, s] of schedules) at[k] = String(s[Math.min(round, s.length) - 1]);
  return at;
}

/**
 * The hyper-parameters of round `round` (1-based): a scheduled key takes its round's entry, or
 * its last one past the end. Values stay strings, as in RunSpec.hyperparameters.
 */
export function hyperparametersAt(
  hp: Record<string, string>,
  round: number,
  fieldPrefix = 'hyperparameters',
): Record<string, string> {
  return valuesAt(hp, schedulesOf(hp, fieldPrefix), round);
}

/** The keys that carry a schedule. */
export function scheduledKeys(hp: Record<string, string>, fieldPrefix = 'hyperparameters'): string[] {
  return [...schedulesOf(hp, fieldPrefix).keys()];
}

/**
 * Every distinct round's hyper-parameters, round 1 first: as many entries as the longest schedule
 * (capped at `rounds`), the last one holding for every later round. The recipes validate them
 * (`recipesByRound`).
 */
export function distinctRounds(
  hp: Record<string, string>,
  rounds: number,
  fieldPrefix = 'hyperparameters',
): Record<string, string>[] {
  const schedules = schedulesOf(hp, fieldPrefix);
  const longest = Math.max(1, ...[...schedules.values()].map((s) => s.length));
  const out: Record<string, string>[] = [];
  for (let round = 1; round <= Math.max(1, Math.min(rounds, longest)); round++)
    out.push(valuesAt(hp, schedules, round));
  return out;
}
