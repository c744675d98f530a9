/** Parsers for numeric CLI flags: a bad value is a DuelError naming the flag and the rule (exit 2). */
import { DuelError } from '../errors.js';

export function numberFlag(flag: string, ok: (n: number) => boolean, rule: string) {
  return (raw: string): number => {
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(n) || !ok(n))
      throw DuelError.invalidArgument([{ field: flag, description: `${rule}, got '${raw}'` }]);
    return n;
  };
}

/** An integer flag of at least `min`. */
export function intFlag(flag: string, min: number) {
  return numberFlag(
    flag,
    (n) => Number.isInteger(n) && n >= min,
    min === 1 ? 'must be a positive integer' : `must be an integer >= ${min}`,
  );
}
