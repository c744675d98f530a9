/**
 * What a policy is worth under the true preference P* (docs/testbed.md, "What a run reports"), from
 * its samples: win rate against π_ref's samples, exploitability against the constructed best
 * responses, the style distribution and its normalised entropy, quality, length. Also the floor a
 * τ-regularised method cannot go below (the regularised equilibrium of the style sub-game), and
 * how faithfully a learned judge reproduces P*.
 */
import { bestResponse } from './corpus.js';
import {
  completionIds,
  cycle,
  type GameConfig,
  LETTERS,
  lettersOf,
  promptIds,
  quality,
  style,
  targetsOf,
  truePref,
} from './game.js';

/** A policy's samples: for each prompt (its token ids), completions' token ids. */
export interface PolicySamples {
  prompts: number[][];
  completions: number[][][];
}

export interface OracleMetrics {
  win_rate_vs_ref: number;
  exploitability: number;
  /**
   * The exploitability of the same policy with every sample made full quality in its own style
   * (see styleOnly): what its per-prompt style mix alone leaves; the rest of `exploitability` is
   * what its quality gap adds.
   */
  exploitability_styles: number;
  style_distribution: number[];
  style_entropy: number;
  quality: number;
  length: number;
}

const mean = (xs: number[]) => (xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length);

/** P*(y ≻ π | x) estimated over π's samples at x. */
function prefAgainst(g: GameConfig, targets: number[], y: number[], samples: number[][]): number {
  return mean(samples.map((y2) => truePref(g, targets, y, y2)));
}

/**
 * E_x max_y P*(y ≻ π | x) − ½ with y over the constructed best responses (full quality, each
 * style) and π's own samples: 0 means nothing beats π at any prompt.
 *
 * From samples alone (no `styleProbs`) P*(y ≻ π | x) is a mean over π's n samples at x, and the max
 * over candidates of n-sample means is biased upward: an exact equilibrium measures about 0.08 with
 * n = 16 on the default game (0.04 at n = 64). With `styleProbs`, π's exact style distribution at
 * each prompt (from the policy's first-token probabilities, see exactStyles), the estimate is
 * Rao-Blackwellised: P*(y ≻ π | x) = Σ_s π(s | x)·E[P*(y ≻ y') | s(y') = s], with only the quality
 * within a style class left to the samples. The equilibrium then measures 0 exactly.
 */
export function exploitability(g: GameConfig, s: PolicySamples, styleProbs?: number[][]): number {
  const pooled = styleProbs ? pooledByStyle(g, s) : [];
  return mean(
    s.prompts.map((p, i) => {
      const targets = targetsOf(p);
      const mine = s.completions[i]!;
      const candidates = [
        ...Array.from({ length: g.n_styles }, (_, st) => completionIds(bestResponse(g, targets, st))),
        ...mine,
      ];
      const here = styleProbs ? qualitiesByStyle(g, targets, mine) : [];
      const against = (y: number[]) =>
        styleProbs
          ? prefAgainstStyles(g, targets, y, styleProbs[i]!, here, pooled)
          : prefAgainst(g, targets, y, mine);
      return Math.max(...candidates.map(against)) - 0.5;
    }),
  );
}

/** The qualities of `completions` at `targets`, grouped by style class (letterless ones left out). */
function qualitiesByStyle(g: GameConfig, targets: number[], completions: number[][]): number[][] {
  const byStyle = Array.from({ length: g.n_styles }, () => [] as number[]);
  for (const c of completions) {
    const st = style(g, c);
    if (st >= 0) byStyle[st]!.push(quality(g, targets, c));
  }
  return byStyle;
}

/** Every sample's quality (at its own prompt), grouped by style class. */
function pooledByStyle(g: GameConfig, s: PolicySamples): number[][] {
  const byStyle = Array.from({ length: g.n_styles }, () => [] as number[]);
  s.completions.forEach((cs, i) => {
    qualitiesByStyle(g, targetsOf(s.prompts[i]!), cs).forEach((qs, st) => {
      byStyle[st]!.push(...qs);
    });
  });
  return byStyle;
}

/**
 * P*(y ≻ π | x) with π's style distribution at x given exactly: each class's share times the mean
 * preference over π's samples of that class at x, or over all prompts' samples of it when x drew
 * none, or against quality 0 (the pessimistic choice) when no prompt did. A completion without a
 * letter has quality 0 and no style, whatever its tokens.
 */
function prefAgainstStyles(
  g: GameConfig,
  targets: number[],
  y: number[],
  probs: number[],
  here: number[][],
  pooled: number[][],
): number {
  const qy = quality(g, targets, y);
  const sy = style(g, y);
  const pref = (q2: number, s2: number) => 1 / (1 + Math.exp(-(g.a * (qy - q2) + g.b * cycle(g, sy, s2))));
  let total = 0;
  for (let st = 0; st < g.n_styles; st++) {
    const share = probs[st] ?? 0;
    if (share === 0) continue;
    const qs = here[st]!.length > 0 ? here[st]! : pooled[st]!.length > 0 ? pooled[st]! : [0];
    total += share * mean(qs.map((q2) => pref(q2, st)));
  }
  const empty = Math.max(0, 1 - probs.slice(0, g.n_styles).reduce((a, b) => a + b, 0));
  return total + empty * pref(0, -1);
}

/** E_x E_{y~π, y'~π_ref} P*(y ≻ y'), pairing the two sample sets prompt by prompt. */
export function winRate(g: GameConfig, policy: PolicySamples, reference: PolicySamples): number {
  return mean(
    policy.prompts.map((p, i) => {
      const targets = targetsOf(p);
      return mean(policy.completions[i]!.map((y) => prefAgainst(g, targets, y, reference.completions[i]!)));
    }),
  );
}

/** Style frequencies (completions without a letter have no style and are left out). */
export function styleDistribution(g: GameConfig, s: PolicySamples): number[] {
  const counts = new Array<number>(g.n_styles).fill(0);
  for (const cs of s.completions)
    for (const c of cs) {
      const st = style(g, c);
      if (st >= 0) counts[st]! += 1;
    }
  const total = counts.reduce((a, b) => a + b, 0);
  return counts.map((c) => (total === 0 ? 0 : c / total));
}

/** Shannon entropy divided by log(n_styles): 1 is an even spread. */
export function normalisedEntropy(p: number[]): number {
  if (p.length < 2) return 1;
  const h = -p.reduce((acc, x) => acc + (x > 0 ? x * Math.log(x) : 0), 0);
  return h / Math.log(p.length);
}

/** `styleProbs`: π's exact style distribution per prompt, for the unbiased exploitability. */
export function oracleMetrics(
  g: GameConfig,
  policy: PolicySamples,
  reference: PolicySamples,
  styleProbs?: number[][],
): OracleMetrics {
  const all = policy.completions.flatMap((cs, i) =>
    cs.map((c) => ({ c, targets: targetsOf(policy.prompts[i]!) })),
  );
  const dist = styleDistribution(g, policy);
  return {
    win_rate_vs_ref: winRate(g, policy, reference),
    exploitability: exploitability(g, policy, styleProbs),
    exploitability_styles: exploitability(g, styleOnly(g, policy), styleProbs),
    style_distribution: dist,
    style_entropy: normalisedEntropy(dist),
    quality: mean(all.map(({ c, targets }) => quality(g, targets, c))),
    length: mean(all.map(({ c }) => lettersOf(c).length)),
  };
}

/**
 * The policy's samples with each one replaced by the full-quality completion of its style
 * (letterless ones kept): the same style mix at every prompt, no quality gap. A policy whose
 * styles are even at every prompt measures 0 on it, however low its quality.
 */
function styleOnly(g: GameConfig, s: PolicySamples): PolicySamples {
  return {
    prompts: s.prompts,
    completions: s.completions.map((cs, i) =>
      cs.map((c) => {
        const st = style(g, c);
        return st < 0 ? c : completionIds(bestResponse(g, targetsOf(s.prompts[i]!), st));
      }),
    ),
  };
}

/** P(s ≻ π) on the style sub-game at full quality: Σ_s' π(s')·σ(b·C[s][s']). */
export function styleWinRates(g: GameConfig, pi: number[]): number[] {
  return pi.map((_, s) => pi.reduce((acc, q, t) => acc + q / (1 + Math.exp(-g.b * cycle(g, s, t))), 0));
}

/** max_s P(s ≻ π) − ½ on the style sub-game at full quality. */
export function styleExploitability(g: GameConfig, pi: number[]): number {
  return Math.max(...styleWinRates(g, pi)) - 0.5;
}

/**
 * The τ-regularised equilibrium π ∝ π_ref·exp(P(s ≻ π)/τ) of the style sub-game (a damped
 * fixed-point iteration) and its exploitability: the floor of methods regularised toward π_ref
 * with strength τ. τ = 0 is the unregularised game, whose floor is 0.
 */
export function regularisedFloor(
  g: GameConfig,
  refStyles: number[],
  tau: number,
): { policy: number[]; exploitability: number } {
  if (tau <= 0) return { policy: refStyles.map(() => 1 / refStyles.length), exploitability: 0 };
  // The fixed-point map has slope about b/(4τ): a step that small keeps the iteration contracting.
  const step = Math.min(0.5, tau / Math.max(g.b, 1e-9));
  let pi = [...refStyles];
  for (let it = 0; it < 1_000_000; it++) {
    const w = styleWinRates(g, pi);
    const logits = refStyles.map((r, s) => Math.log(Math.max(r, 1e-300)) + w[s]! / tau);
    const top = Math.max(...logits);
    const e = logits.map((l) => Math.exp(l - top));
    const z = e.reduce((a, b) => a + b, 0);
    const target = e.map((x) => x / z);
    const change = Math.max(...target.map((x, s) => Math.abs(x - pi[s]!)));
    pi = pi.map((x, s) => (1 - step) * x + step * target[s]!);
    if (change < 1e-12) break;
  }
  return { policy: pi, exploitability: styleExploitability(g, pi) };
}

/** A judge's P(y ≻ y' | x) for a batch of pairs. */
export type JudgeProbs = (
  pairs: { prompt: number[]; first: number[]; second: number[] }[],
) => Promise<number[]>;

/**
 * A learned judge against P* on held-out pairs: agreement on the preferred side (a tie, P* = ½,
 * counts as a miss whichever side the judge leans to), Brier score of its probabilities against
 * P*, its expected log-loss on labels drawn from P* beside a perfect judge's (the labels' own
 * entropy), how often its preferred side would match a label drawn from P* beside how often P*'s
 * own would (expected, so no draw's noise), and whether it reproduces the style cycle
 * (equal-quality completions of styles s and s+1: the judge must prefer s, for every s).
 */
export async function judgeFidelity(
  g: GameConfig,
  judge: JudgeProbs,
  pairs: { prompt: number[]; first: number[]; second: number[] }[],
): Promise<{
  agreement: number;
  brier: number;
  cross_entropy: number;
  cross_entropy_floor: number;
  label_agreement: number;
  oracle_label_agreement: number;
  cycle_reproduced: boolean;
  cycle_probs: number[];
  /** P*'s own P(s ≻ s+1) for the same pairs: what cycle_probs should be. */
  cycle_truth: number[];
}> {
  const probs = await judge(pairs);
  const truth = pairs.map((p) => truePref(g, targetsOf(p.prompt), p.first, p.second));
  const agreement = mean(probs.map((q, i) => (q > 0.5 === truth[i]! > 0.5 ? 1 : 0)));
  const brier = mean(probs.map((q, i) => (q - truth[i]!) ** 2));
  // The expected loss on labels drawn from P*, and what a perfect judge (q = P*) would score.
  const xent = (t: number, q: number) => {
    const c = Math.min(1 - 1e-12, Math.max(1e-12, q));
    return -(t * Math.log(c) + (1 - t) * Math.log(1 - c));
  };
  const cyclePairs: { prompt: number[]; first: number[]; second: number[] }[] = [];
  if (g.n_styles >= 3 && g.b > 0) {
    // One target, present in both completions, so their quality is equal and only style differs.
    const targets = [LETTERS.length - 1];
    for (let s = 0; s < g.n_styles; s++) {
      const t = (s + 1) % g.n_styles;
      cyclePairs.push({
        prompt: promptIds(targets),
        first: completionIds(bestResponse(g, targets, s)),
        second: completionIds(bestResponse(g, targets, t)),
      });
    }
  }
  const cycleProbs = cyclePairs.length ? await judge(cyclePairs) : [];
  // The chance that the side q prefers wins a draw from P* = t (a judge at exactly ½ guesses).
  const wins = (t: number, q: number) => (q > 0.5 ? t : q < 0.5 ? 1 - t : 0.5);
  return {
    agreement,
    brier,
    cross_entropy: mean(probs.map((q, i) => xent(truth[i]!, q))),
    cross_entropy_floor: mean(truth.map((t) => xent(t, t))),
    label_agreement: mean(probs.map((q, i) => wins(truth[i]!, q))),
    oracle_label_agreement: mean(truth.map((t) => Math.max(t, 1 - t))),
    cycle_reproduced: cycleProbs.length > 0 && cycleProbs.every((q) => q > 0.5),
    cycle_probs: cycleProbs,
    cycle_truth: cyclePairs.map((p) => truePref(g, targetsOf(p.prompt), p.first, p.second)),
  };
}
