/**
 * Estimators shared by the self-play family (docs/algorithms.md, "Estimating win rates"): win rates
 * from the K×K preference matrix, winner and loser, judge probabilities from ordered-pair
 * logits, and the KL and entropy figures every round reports. Plain numbers, no graphs. The
 * judge-matrix arithmetic lives beside the judge (src/models/judge/preferences.ts) and is
 * re-exported here, so the scorer, the judge CLI and the algorithms share one definition.
 */
export { btScores, prefsFromLogits, winRates } from '../models/judge/preferences.js';

/** Indices of the largest and smallest win rate, ties broken by the lower index. */
export function winnerLoser(rates: number[]): { winner: number; loser: number } {
  let winner = 0;
  let loser = 0;
  rates.forEach((r, i) => {
    if (r > rates[winner]!) winner = i;
    if (r < rates[loser]!) loser = i;
  });
  return { winner, loser };
}

/** KL(π_θ‖π_ref) estimated on samples from π_θ: mean of logp_θ − logp_ref. */
export function klOnSamples(logpTheta: number[], logpRef: number[]): number {
  if (logpTheta.length === 0) return 0;
  return logpTheta.reduce((s, x, i) => s + x - logpRef[i]!, 0) / logpTheta.length;
}

/**
 * The win rate of one group of candidates against another, over many prompts: the mean of
 * prefs[i][j] for i in `mine` and j in `theirs` (index ranges of each prompt's candidates).
 */
export function groupWinRate(prefs: number[][][], mine: [number, number], theirs: [number, number]): number {
  let sum = 0;
  let count = 0;
  for (const m of prefs)
    for (let i = mine[0]; i < mine[1]; i++)
      for (let j = theirs[0]; j < theirs[1]; j++) {
        sum += m[i]![j]!;
        count += 1;
      }
  return count === 0 ? Number.NaN : sum / count;
}
