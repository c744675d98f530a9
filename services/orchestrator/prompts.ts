/**
 * The prompt sets a run names: JSONL files (a path or file:// URL) with `prompt_ids` or `prompt`
 * text per line; text is encoded with the policy's tokenizer. Each round takes the next
 * `prompts_per_round` of them, wrapping around, so rounds see different prompts and a restarted
 * round sees the same ones.
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { DuelError } from '../../src/errors.js';
import { TextTokenizer } from '../../src/models/tokenizer.js';
import { readJsonl } from '../../src/platform/jsonl.js';

const Line = z.looseObject({
  prompt_ids: z.array(z.number().int().nonnegative()).min(1).optional(),
  prompt: z.string().min(1).optional(),
});

export function readPrompts(uri: string, field: string, tokenizerDir: string): number[][] {
  const path = uri.startsWith('file://') ? fileURLToPath(uri) : uri;
  if (!existsSync(path) || !statSync(path).isFile())
    throw DuelError.invalidArgument([{ field, description: `${uri} is not a readable file` }]);
  let tokenizer: TextTokenizer | undefined;
  return readJsonl(path, Line).map((line, i) => {
    if (line.prompt_ids) return line.prompt_ids;
    if (line.prompt === undefined)
      throw DuelError.invalidArgument([
        { field: `${field}: ${path}:${i + 1}`, description: 'needs prompt_ids or prompt' },
      ]);
    if (!tokenizer) {
      if (!existsSync(join(tokenizerDir, 'tokenizer.json')))
        throw DuelError.invalidArgument([
          {
            field: `${field}: ${path}:${i + 1}`,
            description: 'is text and the policy has no tokenizer.json (give prompt_ids)',
          },
        ]);
      tokenizer = TextTokenizer.fromDir(tokenizerDir);
    }
    return tokenizer.encode(line.prompt);
  });
}

/** The prompts of round `round` (1-based): the next `perRound` after the previous round's, cycling. */
export function roundPrompts<T>(all: T[], perRound: number, round: number): T[] {
  if (perRound === 0 || perRound >= all.length) return all;
  const start = ((round - 1) * perRound) % all.length;
  return Array.from({ length: perRound }, (_, i) => all[(start + i) % all.length]!);
}
