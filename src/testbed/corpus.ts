/**
 * The testbed's data: prompts, the mediocre SFT corpus π_ref learns from (partial target
 * coverage, lengths around the budget, first-letter styles skewed), the oracle-labelled judge
 * pairs (Bernoulli draws from P*), and the constructed best responses of each style.
 */
import type { LabelledPair } from '../algorithms/train-judge.js';
import { rng } from '../models/common/rng.js';
import { completionIds, type GameConfig, LETTERS, promptIds, truePref } from './game.js';

type Draw = () => number;

const pick = <T>(xs: T[], draw: Draw): T => xs[Math.floor(draw() * xs.length)]!;

/** A sorted set of 1..max_targets target letter indices. */
function drawTargets(g: GameConfig, draw: Draw): number[] {
  const n = 1 + Math.floor(draw() * g.max_targets);
  const pool = [...LETTERS.keys()];
  const out: number[] = [];
  while (out.length < n) out.push(pool.splice(Math.floor(draw() * pool.length), 1)[0]!);
  return out.sort((x, y) => x - y);
}

export function drawPrompts(g: GameConfig, count: number, seed: number): number[][] {
  const draw = rng(seed);
  return Array.from({ length: count }, () => drawTargets(g, draw));
}

/**
 * π_ref's style skew: the first style gets the most mass and each next one less (60/25/15 for
 * three styles), so a balanced policy has room to improve on it.
 */
export function referenceStyleWeights(g: GameConfig): number[] {
  const raw = Array.from({ length: g.n_styles }, (_, s) => 0.45 ** s);
  const total = raw.reduce((a, b) => a + b, 0);
  return raw.map((w) => w / total);
}

function drawStyle(weights: number[], draw: Draw): number {
  let u = draw();
  for (const [s, w] of weights.entries()) {
    u -= w;
    if (u < 0) return s;
  }
  return weights.length - 1;
}

const lettersOfStyle = (g: GameConfig, s: number) => [...LETTERS.keys()].filter((i) => i % g.n_styles === s);

/**
 * A mediocre completion: a first letter of a skewed style, about half the targets, and filler
 * letters to a length around the budget.
 */
export function mediocreCompletion(g: GameConfig, targets: number[], draw: Draw): number[] {
  const s = drawStyle(referenceStyleWeights(g), draw);
  const first = pick(lettersOfStyle(g, s), draw);
  const kept = targets.filter(() => draw() < 0.5);
  const length = Math.min(g.max_len, Math.max(1, g.budget + Math.floor(draw() * 3) - 1));
  const rest = [...kept];
  while (rest.length + 1 < length) rest.push(Math.floor(draw() * LETTERS.length));
  for (let i = rest.length - 1; i > 0; i--) {
    const j = Math.floor(draw() * (i + 1));
    [rest[i], rest[j]] = [rest[j]!, rest[i]!];
  }
  return [first, ...rest].slice(0, g.max_len);
}

export interface SftExample {
  prompt_ids: number[];
  completion_ids: number[][];
  prefs: number[][];
}

export function sftCorpus(g: GameConfig, count: number, seed: number): SftExample[] {
  const draw = rng(seed);
  return Array.from({ length: count }, () => {
    const targets = drawTargets(g, draw);
    return {
      prompt_ids: promptIds(targets),
      completion_ids: [completionIds(mediocreCompletion(g, targets, draw))],
      prefs: [],
    };
  });
}

/**
 * How a judge pair is labelled: `drawn`, the winner of a Bernoulli(P*(y ≻ y')) draw (what human
 * labels are); `soft`, P*(y ≻ y') itself as the label (what many annotators' shares tend to).
 */
export type JudgeLabels = 'drawn' | 'soft';

/**
 * Judge training pairs: two completions of a prompt (mediocre or better, so quality varies),
 * labelled from P* as `labels` says.
 */
export function judgePairs(
  g: GameConfig,
  count: number,
  seed: number,
  labels: JudgeLabels = 'drawn',
): LabelledPair[] {
  const draw = rng(seed);
  const candidate = (targets: number[]) =>
    draw() < 0.5
      ? mediocreCompletion(g, targets, draw)
      : bestResponse(g, targets, Math.floor(draw() * g.n_styles), draw);
  return Array.from({ length: count }, () => {
    const targets = drawTargets(g, draw);
    const y = completionIds(candidate(targets));
    const y2 = completionIds(candidate(targets));
    const p = truePref(g, targets, y, y2);
    if (labels === 'soft') return { prompt: promptIds(targets), chosen: y, rejected: y2, label: p };
    const yWins = draw() < p;
    return { prompt: promptIds(targets), chosen: yWins ? y : y2, rejected: yWins ? y2 : y };
  });
}

/**
 * A full-quality completion of style `s` (letter indices): a target of that style first when the
 * prompt has one, else one extra letter of that style, then the remaining targets.
 */
export function bestResponse(g: GameConfig, targets: number[], s: number, draw: Draw = () => 0): number[] {
  const ofStyle = targets.filter((t) => t % g.n_styles === s);
  const first = ofStyle.length > 0 ? pick(ofStyle, draw) : pick(lettersOfStyle(g, s), draw);
  return [first, ...targets.filter((t) => t !== first)].slice(0, g.max_len);
}

export { promptIds };
