/**
 * Estimators shared by the self-play family (ALGORITHMS.md, "Estimating win rates"): win rates
 * from the K×K preference matrix, winner and loser, judge probabilities from ordered-pair
 * logits, and the KL and entropy figures every round reports. Plain numbers, no graphs.
 */

/** P̂_i = mean_j prefs[i][j], over all j (the reference pipeline) or over j ≠ i. */
export function winRates(prefs: number[][], includeSelf = true): number[] {
  const k = prefs.length;
  return prefs.map((row, i) => {
    const sum = row.reduce((s, p, j) => (includeSelf || j !== i ? s + p : s), 0);
    return sum / (includeSelf ? k : k - 1);
  });
}

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

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/**
 * P(y_i ≻ y_j) from ordered-pair logits C: `pairwise` σ((C_ij − C_ji)/T); `bt` first aggregates
 * s_i = mean_{j≠i}(C_ij − C_ji) and uses σ(s_i − s_j).
 */
export function prefsFromLogits(c: number[][], mode: 'pairwise' | 'bt', temperature = 1): number[][] {
  if (mode === 'pairwise')
    return c.map((row, i) =>
      row.map((_, j) => (i === j ? 0.5 : sigmoid((c[i]![j]! - c[j]![i]!) / temperature))),
    );
  const s = btScores(c);
  return s.map((si, i) => s.map((sj, j) => (i === j ? 0.5 : sigmoid(si - sj))));
}

/** Bradley-Terry scores from ordered-pair logits: s_i = mean over j ≠ i of (C_ij − C_ji). */
export function btScores(c: number[][]): number[] {
  const k = c.length;
  return c.map((row, i) =>
    k < 2 ? 0 : row.reduce((a, _, j) => (j === i ? a : a + c[i]![j]! - c[j]![i]!), 0) / (k - 1),
  );
}

/** KL(π_θ‖π_ref) estimated on samples from π_θ: mean of logp_θ − logp_ref. */
export function klOnSamples(logpTheta: number[], logpRef: number[]): number {
  if (logpTheta.length === 0) return 0;
  return logpTheta.reduce((s, x, i) => s + x - logpRef[i]!, 0) / logpTheta.length;
}

/** Mean per-token entropy −Σ p log p over rows of token log-probability vectors. */
export function tokenEntropy(rows: ArrayLike<number>[]): number {
  if (rows.length === 0) return 0;
  let total = 0;
  for (const row of rows) {
    let h = 0;
    for (let i = 0; i < row.length; i++) h -= Math.exp(row[i]!) * row[i]!;
    total += h;
  }
  return total / rows.length;
}
