/**
 * erf in float64, independent of the engine's Erf (the references and the gradient checks use it):
 * its Maclaurin series for |x| < 3, its continued-fraction complement beyond.
 */
export function erf(x: number): number {
  if (Math.abs(x) < 3) {
    let term = x;
    let sum = x;
    for (let n = 1; n < 100; n++) {
      term *= (-x * x) / n;
      sum += term / (2 * n + 1);
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc(x) = e^{−x²}/(x√π) · 1/(1 + 1/(2x²)/(1 + 2/(2x²)/(1 + …))) (Lentz, enough terms for |x| ≥ 3)
  const a = Math.abs(x);
  let f = a;
  for (let n = 60; n >= 1; n--) f = a + n / 2 / f;
  const erfc = Math.exp(-a * a) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}
