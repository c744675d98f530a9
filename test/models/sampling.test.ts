/** Next-token choice against a brute-force statement of temperature, top-k and top-p. */
import { describe, expect, it } from 'vitest';
import { rng } from '../../src/models/common/rng.js';
import { drawToken, samplingDistribution, streamSeed } from '../../src/models/sampling.js';

/** Sort everything, cut at k, softmax at T, cut at p, renormalise: the definition, slowly. */
function bruteForce(logits: number[], t: number, k: number, p: number): Map<number, number> {
  const order = logits.map((_, i) => i).sort((a, b) => logits[b]! - logits[a]! || a - b);
  const kept = k > 0 ? order.slice(0, k) : order;
  const e = kept.map((i) => Math.exp(logits[i]! / t));
  const z = e.reduce((a, b) => a + b, 0);
  let probs = e.map((x) => x / z);
  let n = probs.length;
  if (p < 1) {
    let cum = 0;
    n = 0;
    while (cum < p) cum += probs[n++]!;
  }
  probs = probs.slice(0, n);
  const z2 = probs.reduce((a, b) => a + b, 0);
  return new Map(kept.slice(0, n).map((id, i) => [id, probs[i]! / z2]));
}

describe('samplingDistribution', () => {
  const next = rng(5);
  const cases = Array.from({ length: 40 }, (_, c) => ({
    logits: Array.from({ length: 3 + (c % 17) }, () => (next() - 0.5) * 8),
    t: [0.3, 0.7, 1, 1.8][c % 4]!,
    k: [0, 1, 3, 5][(c >> 2) % 4]!,
    p: [1, 0.5, 0.9][c % 3]!,
  }));

  it.each(cases.map((c, i) => [i, c] as const))(
    'case %i matches the definition',
    (_i, { logits, t, k, p }) => {
      const { ids, probs } = samplingDistribution(logits, { temperature: t, topK: k, topP: p });
      const want = bruteForce(logits, t, k, p);
      expect(new Set(ids)).toEqual(new Set(want.keys()));
      ids.forEach((id, i) => {
        expect(probs[i]).toBeCloseTo(want.get(id)!, 12);
      });
    },
  );

  it('greedy picks the largest logit, the lowest id on ties', () => {
    expect(samplingDistribution([1, 3, 3, 2], { temperature: 0, topK: 0, topP: 1 })).toEqual({
      ids: [1],
      probs: [1],
    });
  });

  it('draws by inverse CDF, the fast untruncated path agreeing with the general one', () => {
    const logits = [0.5, -1, 2, 0, 1.5];
    const o = { temperature: 0.9, topK: 0, topP: 1 };
    const { ids, probs } = samplingDistribution(logits, o);
    let cum = 0;
    const edges = probs.map((q) => (cum += q));
    for (let u = 0.001; u < 1; u += 0.0137) {
      const want = ids[edges.findIndex((e) => u < e)]!;
      expect(drawToken(logits, o, u)).toBe(want);
    }
  });
});

describe('streamSeed', () => {
  it('depends on the seed, the prompt tokens and the sample index, and on nothing else', () => {
    const a = streamSeed(1, [4, 5], 0);
    expect(streamSeed(1, [4, 5], 0)).toBe(a);
    expect(
      new Set([
        a,
        streamSeed(2, [4, 5], 0),
        streamSeed(1, [5, 4], 0),
        streamSeed(1, [4, 5], 1),
        streamSeed(1, [4, 5, 0], 0),
      ]).size,
    ).toBe(5);
  });
});
