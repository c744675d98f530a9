/**
 * Arithmetic on a judge's K×K ordered-pair logits C (docs/algorithms.md, "Estimating win rates"):
 * probabilities pairwise or through Bradley-Terry scores, and win rates. Plain numbers.
 */

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

/** P̂_i = mean_j prefs[i][j], over all j (the reference pipeline) or over j ≠ i. */
export function winRates(prefs: number[][], includeSelf = true): number[] {
  const k = prefs.length;
  return prefs.map((row, i) => {
    const sum = row.reduce((s, p, j) => (includeSelf || j !== i ? s + p : s), 0);
    return sum / (includeSelf ? k : k - 1);
  });
}
