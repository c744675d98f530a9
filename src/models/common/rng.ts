/**
 * A small seeded PRNG (mulberry32) and the normal draws built on it, so every weight
 * initialisation and every randomized test names a reproducible seed.
 */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fills `out` with N(0, std²) draws (Box–Muller). */
export function fillNormal(out: Float32Array | Float64Array, std: number, next: () => number): void {
  for (let i = 0; i < out.length; i += 2) {
    const u = Math.max(next(), Number.MIN_VALUE);
    const r = std * Math.sqrt(-2 * Math.log(u));
    const theta = 2 * Math.PI * next();
    out[i] = r * Math.cos(theta);
    if (i + 1 < out.length) out[i + 1] = r * Math.sin(theta);
  }
}
