/**
 * Training records as the CLI reads them: token ids are authoritative, and text (prompt,
 * completion(s), chosen, rejected) is encoded with the model directory's tokenizer when ids are
 * absent. A pair may carry `preference`, P(chosen ≻ rejected), for soft labels. Every problem
 * names the file, the record and the field.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { pairRecord, type RoundRecord } from '../algorithms/recipes/index.js';
import { DuelError } from '../errors.js';
import { TextTokenizer } from '../models/tokenizer.js';
import { readJsonl } from './jsonl.js';

const ids = z.array(z.number().int().nonnegative());
const text = z.string().min(1);

const Line = z.looseObject({
  prompt_ids: ids.min(1).optional(),
  prompt: text.optional(),
  completion_ids: z.union([ids.min(1), z.array(ids)]).optional(),
  completion: text.optional(),
  completions: z.array(text).optional(),
  prefs: z.array(z.array(z.number())).optional(),
  chosen_ids: ids.min(1).optional(),
  chosen: text.optional(),
  rejected_ids: ids.min(1).optional(),
  rejected: text.optional(),
  /** P(chosen ≻ rejected): annotators' share, or a known preference (soft labels). */
  preference: z.number().min(0).max(1).optional(),
});
type Line = z.infer<typeof Line>;

/** Reads `file`, encoding text with the tokenizer in `tokenizerDir` where ids are missing. */
export function readRecords(
  file: string,
  tokenizerDir: string,
  kind: 'round' | 'sft' | 'pairs',
): RoundRecord[] {
  let tokenizer: TextTokenizer | undefined;
  const lines = readJsonl(file, Line);
  const records = lines.map((line, i) => {
    const where = `${file}: record ${i + 1}`;
    const fail = (field: string, description: string) =>
      DuelError.invalidArgument([{ field: `${where}: ${field}`, description }]);
    const encode = (s: string, field: string) => {
      if (!tokenizer) {
        if (!existsSync(join(tokenizerDir, 'tokenizer.json')))
          throw fail(
            field,
            `is text, and ${tokenizerDir} has no tokenizer.json to encode it (give ${field}_ids instead)`,
          );
        tokenizer = TextTokenizer.fromDir(tokenizerDir);
      }
      const out = tokenizer.encode(s);
      if (out.length === 0) throw fail(field, 'encodes to no tokens');
      return out;
    };
    const one = (idsOf: number[] | undefined, textOf: string | undefined, field: string) => {
      if (idsOf) return idsOf;
      if (textOf !== undefined) return encode(textOf, field);
      throw fail(`${field}_ids`, `needs ${field}_ids or ${field}`);
    };
    const prompt = one(line.prompt_ids, line.prompt, 'prompt');
    if (kind === 'pairs' || line.chosen_ids || line.chosen !== undefined)
      return pairRecord(
        prompt,
        one(line.chosen_ids, line.chosen, 'chosen'),
        one(line.rejected_ids, line.rejected, 'rejected'),
        line.preference,
      );
    return { prompt_ids: prompt, completion_ids: completionsOf(line, encode, fail), prefs: line.prefs ?? [] };
  });
  // SFT trains on every completion alike: one record each, so records of any width mix.
  if (kind === 'sft')
    return records.flatMap((r) =>
      r.completion_ids.map((c) => ({ prompt_ids: r.prompt_ids, completion_ids: [c], prefs: [] })),
    );
  return records;
}

function completionsOf(
  line: Line,
  encode: (s: string, field: string) => number[],
  fail: (field: string, description: string) => DuelError,
): number[][] {
  const c = line.completion_ids;
  if (c && c.length > 0) return typeof c[0] === 'number' ? [c as number[]] : (c as number[][]);
  if (line.completions) return line.completions.map((s, k) => encode(s, `completions[${k}]`));
  if (line.completion !== undefined) return [encode(line.completion, 'completion')];
  throw fail('completion_ids', 'needs completion_ids, completions or completion');
}
