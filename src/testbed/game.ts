/**
 * The `letters` game of docs/testbed.md: a language task whose true preference is a formula.
 * A prompt asks for a set of target letters; a completion is a string of letters. Quality is the
 * share of targets present minus a penalty for letters beyond the budget; style is the first
 * letter's index mod n_styles, and styles beat each other in a cycle. Every parameter is a config
 * key (`game.*`); nothing here assumes the defaults.
 */
import { z } from 'zod';
import { DuelError } from '../errors.js';

export const LETTERS = 'abcdefghijklmnop'.split('');

const gameSchema = z
  .strictObject({
    n_styles: z.number().int().min(1).max(LETTERS.length).default(3),
    a: z.number().min(0).default(6),
    b: z.number().min(0).default(2),
    max_targets: z.number().int().min(1).max(LETTERS.length).default(3),
    max_len: z.number().int().min(1).max(64).default(8),
    budget: z.number().int().min(1).default(4),
    length_penalty: z.number().min(0).default(0.5),
  })
  .refine((g) => g.n_styles !== 2 || g.b === 0, {
    message:
      'n_styles = 2 makes the cycle contradictory (each style would beat the other); use b = 0 or n_styles ≠ 2',
    path: ['n_styles'],
  });
export type GameConfig = z.infer<typeof gameSchema>;

/** The game from `game.*` keys (e.g. `--set game.b=0`); every problem names its key. */
export function parseGame(raw: Record<string, unknown>): GameConfig {
  const r = gameSchema.safeParse(raw);
  if (!r.success)
    throw DuelError.invalidArgument(
      r.error.issues.map((i) => ({ field: `game.${i.path.join('.')}`, description: i.message })),
    );
  return r.data;
}

/**
 * Token ids, matching the word-level tokenizer the testbed writes: the four specials (unk, pad,
 * bos, eos), then `<sep>`, `want:` and the letters.
 */
export const VOCAB = {
  words: ['<sep>', 'want:', ...LETTERS],
  pad: 1,
  bos: 2,
  eos: 3,
  sep: 4,
  want: 5,
  firstLetter: 6,
  size: 4 + 2 + LETTERS.length,
} as const;

export const letterId = (index: number) => VOCAB.firstLetter + index;
/** A token's letter index, or -1 when the token is not a letter. */
const letterIndex = (id: number) =>
  id >= VOCAB.firstLetter && id < VOCAB.firstLetter + LETTERS.length ? id - VOCAB.firstLetter : -1;

/** `<bos> want: t1 t2 … <sep>` for sorted target letter indices. */
export function promptIds(targets: number[]): number[] {
  return [VOCAB.bos, VOCAB.want, ...targets.map(letterId), VOCAB.sep];
}

/** The target letter indices a prompt asks for. */
export function targetsOf(prompt: number[]): number[] {
  return prompt.map(letterIndex).filter((i) => i >= 0);
}

/** The letters of a completion up to its first non-letter (EOS ends it; anything else too). */
export function lettersOf(completion: number[]): number[] {
  const out: number[] = [];
  for (const id of completion) {
    const i = letterIndex(id);
    if (i < 0) break;
    out.push(i);
  }
  return out;
}

export function quality(g: GameConfig, targets: number[], completion: number[]): number {
  const letters = lettersOf(completion);
  const have = new Set(letters);
  const covered = targets.length === 0 ? 1 : targets.filter((t) => have.has(t)).length / targets.length;
  const over = Math.max(0, letters.length - g.budget);
  return Math.max(0, covered - (g.length_penalty * over) / g.budget);
}

/** The completion's style class, or -1 when it has no letter (it then has no style to beat). */
export function style(g: GameConfig, completion: number[]): number {
  const first = lettersOf(completion)[0];
  return first === undefined ? -1 : first % g.n_styles;
}

/** C[s][s']: +1 when s beats s' (s' = s+1 mod n), −1 when s' beats s, else 0. */
export function cycle(g: GameConfig, s: number, t: number): number {
  if (s < 0 || t < 0 || g.n_styles < 3) return 0;
  if (t === (s + 1) % g.n_styles) return 1;
  if (s === (t + 1) % g.n_styles) return -1;
  return 0;
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/** The logit of P*(y ≻ y' | x): a·(q − q') + b·C[s][s']. */
export function trueLogit(g: GameConfig, targets: number[], y: number[], y2: number[]): number {
  return g.a * (quality(g, targets, y) - quality(g, targets, y2)) + g.b * cycle(g, style(g, y), style(g, y2));
}

/** P*(y ≻ y' | x). */
export function truePref(g: GameConfig, targets: number[], y: number[], y2: number[]): number {
  return sigmoid(trueLogit(g, targets, y, y2));
}

/** Completion token ids (letters, then EOS) from letter indices. */
export function completionIds(letters: number[]): number[] {
  return [...letters.map(letterId), VOCAB.eos];
}

/** The longest completion the game allows, EOS included: the sampler's max_new_tokens. */
export const maxNewTokens = (g: GameConfig) => g.max_len + 1;
