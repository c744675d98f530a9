/** JSON Lines in and out: every bad line is reported with its file, line number and field. */
import { existsSync, readFileSync } from 'node:fs';
import type { z } from 'zod';
import { DuelError, type FieldViolation } from '../errors.js';

export function readJsonl<S extends z.ZodType>(path: string, schema: S): z.output<S>[] {
  if (!existsSync(path)) throw DuelError.invalidArgument([{ field: path, description: 'file not found' }]);
  const out: z.output<S>[] = [];
  const problems: FieldViolation[] = [];
  readFileSync(path, 'utf8')
    .split('\n')
    .forEach((line, i) => {
      if (line.trim() === '' || problems.length >= 20) return;
      const where = `${path}:${i + 1}`;
      let json: unknown;
      try {
        json = JSON.parse(line);
      } catch (e) {
        problems.push({ field: where, description: `not valid JSON: ${(e as Error).message}` });
        return;
      }
      const parsed = schema.safeParse(json);
      if (parsed.success) out.push(parsed.data);
      else
        for (const issue of parsed.error.issues)
          problems.push({
            field: `${where}: ${issue.path.join('.') || '(record)'}`,
            description: issue.message,
          });
    });
  if (problems.length > 0) throw DuelError.invalidArgument(problems);
  if (out.length === 0) throw DuelError.invalidArgument([{ field: path, description: 'holds no records' }]);
  return out;
}
