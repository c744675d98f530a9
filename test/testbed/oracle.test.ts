/** The oracle metrics on hand-built policies, the floor solver, and the oracle judge's contract. */
import { describe, expect, it } from 'vitest';
import { prefsFromLogits } from '../../src/algorithms/estimators.js';
import { rng } from '../../src/models/common/rng.js';
import {
  bestResponse,
  drawPrompts,
  judgePairs,
  mediocreCompletion,
  referenceStyleWeights,
} from '../../src/testbed/corpus.js';
import {
  completionIds,
  parseGame,
  promptIds,
  quality,
  style,
  targetsOf,
  truePref,
} from '../../src/testbed/game.js';
import {
  exploitability,
  judgeFidelity,
  normalisedEntropy,
  oracleMetrics,
  type PolicySamples,
  regularisedFloor,
  styleExploitability,
} from '../../src/testbed/oracle.js';
import { OracleJudge } from '../../src/testbed/oracle-judge.js';

const g = parseGame({});
const targets = drawPrompts(g, 40, 3);

/** A policy that answers every prompt with full quality, style s for sample j drawn from `styles`. */
function fullQuality(styleOf: (j: number) => number, n: number): PolicySamples {
  return {
    prompts: targets.map(promptIds),
    completions: targets.map((t) =>
      Array.from({ length: n }, (_, j) => completionIds(bestResponse(g, t, styleOf(j)))),
    ),
  };
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

describe('the letters game', () => {
  it('scores quality, style and P* as docs/testbed.md defines them', () => {
    const t = [2, 5, 9];
    // c, f, j: every target within the budget
    expect(quality(g, t, completionIds([2, 5, 9]))).toBe(1);
    // two of three targets, plus 2 letters over the budget of 4: 2/3 − 0.5·2/4
    expect(quality(g, t, completionIds([2, 5, 0, 1, 3, 4]))).toBeCloseTo(2 / 3 - 0.25, 12);
    expect(style(g, completionIds([4, 1]))).toBe(1); // 'e' is letter 4, 4 mod 3 = 1
    // Style 0 beats style 1 at equal quality: σ(b).
    const y0 = completionIds([3, 2, 5, 9]); // d: style 0
    const y1 = completionIds([4, 2, 5, 9]); // e: style 1
    expect(truePref(g, t, y0, y1)).toBeCloseTo(sigmoid(g.b), 12);
    expect(truePref(g, t, y1, y0)).toBeCloseTo(sigmoid(-g.b), 12);
  });

  it('refuses a contradictory cycle and names the key', () => {
    expect(() => parseGame({ n_styles: 2 })).toThrow(/game.n_styles/);
    expect(() => parseGame({ budget: 0 })).toThrow(/game.budget/);
    expect(parseGame({ n_styles: 2, b: 0 }).n_styles).toBe(2);
  });

  it('draws π_ref-style completions with the skewed styles', () => {
    const draw = rng(5);
    const counts = [0, 0, 0];
    for (let i = 0; i < 6000; i++) counts[style(g, completionIds(mediocreCompletion(g, [1, 7], draw)))]! += 1;
    const w = referenceStyleWeights(g);
    for (const s of [0, 1, 2]) expect(counts[s]! / 6000).toBeCloseTo(w[s]!, 1);
  });
});

describe('oracle metrics', () => {
  it('an even style mix at full quality cannot be exploited', () => {
    const even = fullQuality((j) => j % 3, 30);
    expect(exploitability(g, even)).toBeLessThan(1e-9);
    const m = oracleMetrics(g, even, even);
    expect(m.quality).toBe(1);
    expect(m.style_entropy).toBeCloseTo(1, 12);
    expect(m.win_rate_vs_ref).toBeCloseTo(0.5, 12);
  });

  it('a single-style policy is exploited by exactly the predicted margin σ(b) − ½', () => {
    const single = fullQuality(() => 1, 8);
    expect(exploitability(g, single)).toBeCloseTo(sigmoid(g.b) - 0.5, 12);
    expect(normalisedEntropy(oracleMetrics(g, single, single).style_distribution)).toBeCloseTo(0, 12);
  });
});

describe('the style part of exploitability', () => {
  const even = targets.map(() => [1 / 3, 1 / 3, 1 / 3]);
  // Style j mod 3 at every prompt, but the last target dropped: quality below 1 at every prompt
  // with two or more targets, and a best response of full quality gains on each such sample.
  const missing: PolicySamples = {
    prompts: targets.map(promptIds),
    completions: targets.map((t) =>
      Array.from({ length: 30 }, (_, j) => {
        const full = bestResponse(g, t, j % 3);
        return completionIds(t.length > 1 ? full.slice(0, -1) : full);
      }),
    ),
  };

  it('is 0 for an even style mix whatever its quality, while the quality gap is exploited', () => {
    const m = oracleMetrics(g, missing, missing, even);
    expect(m.quality).toBeLessThan(0.9);
    expect(m.exploitability).toBeGreaterThan(0.1);
    expect(m.exploitability_styles).toBeCloseTo(0, 12);
  });

  it('is the whole exploitability of a single-style policy at full quality', () => {
    const single = fullQuality(() => 1, 8);
    const m = oracleMetrics(
      g,
      single,
      single,
      targets.map(() => [0, 1, 0]),
    );
    expect(m.exploitability_styles).toBeCloseTo(sigmoid(g.b) - 0.5, 12);
    expect(m.exploitability_styles).toBeCloseTo(m.exploitability, 12);
  });
});

describe('exploitability with the exact style distribution', () => {
  const n = 4;
  // An even policy's n samples per prompt drawn at random, as a sampler would draw them.
  const draw = rng(11);
  const sampled = fullQuality(() => Math.floor(draw() * 3), n);
  const even = targets.map(() => [1 / 3, 1 / 3, 1 / 3]);

  it('measures an even policy as unexploitable from 4 samples a prompt, where the plug-in estimate cannot', () => {
    expect(exploitability(g, sampled, even)).toBeCloseTo(0, 12);
    // The plug-in estimate reads sampling noise as exploitability (about 0.17 at n = 4).
    expect(exploitability(g, sampled)).toBeGreaterThan(0.1);
  });

  it('is exact for a skewed policy, and charges a letterless share with quality 0', () => {
    const skew = [0.6, 0.25, 0.15];
    const closed = Math.max(
      ...[0, 1, 2].map((s) =>
        skew.reduce(
          (acc, p, t) => acc + p * (s === t ? 0.5 : t === (s + 1) % 3 ? sigmoid(g.b) : sigmoid(-g.b)),
          0,
        ),
      ),
    );
    expect(
      exploitability(
        g,
        sampled,
        targets.map(() => skew),
      ),
    ).toBeCloseTo(closed - 0.5, 12);
    // Half the mass on completions without a letter: each is beaten with σ(a) by a full answer.
    const half = [0.5 / 3, 0.5 / 3, 0.5 / 3];
    expect(
      exploitability(
        g,
        sampled,
        targets.map(() => half),
      ),
    ).toBeCloseTo(0.5 * 0.5 + 0.5 * sigmoid(g.a) - 0.5, 12);
  });
});

describe('judge fidelity', () => {
  const pairs = judgePairs(g, 300, 8).map((p) => ({ prompt: p.prompt, first: p.chosen, second: p.rejected }));
  const truth = (ps: typeof pairs) => ps.map((p) => truePref(g, targetsOf(p.prompt), p.first, p.second));

  it('scores a judge that is P* as perfect: its log-loss is the floor, and it reproduces the cycle', async () => {
    const f = await judgeFidelity(g, async (ps) => truth(ps), pairs);
    expect(f.agreement).toBe(1);
    expect(f.brier).toBe(0);
    expect(f.cross_entropy).toBeCloseTo(f.cross_entropy_floor, 12);
    expect(f.cross_entropy_floor).toBeGreaterThan(0.1);
    expect(f.label_agreement).toBeCloseTo(f.oracle_label_agreement, 12);
    expect(f.oracle_label_agreement).toBeGreaterThan(0.5);
    expect(f.cycle_reproduced).toBe(true);
    expect(f.cycle_probs).toEqual(f.cycle_truth);
    for (const t of f.cycle_truth) expect(t).toBeCloseTo(sigmoid(g.b), 12);
  });

  it('charges a coin-flip judge ln 2 and a judge blind to style the gap to the floor', async () => {
    const coin = await judgeFidelity(g, async (ps) => ps.map(() => 0.5), pairs);
    expect(coin.cross_entropy).toBeCloseTo(Math.LN2, 12);
    expect(coin.label_agreement).toBe(0.5);
    expect(coin.cycle_reproduced).toBe(false);
    const qualityOnly = await judgeFidelity(
      g,
      async (ps) =>
        ps.map((p) => {
          const t = targetsOf(p.prompt);
          return sigmoid(g.a * (quality(g, t, p.first) - quality(g, t, p.second)));
        }),
      pairs,
    );
    expect(qualityOnly.cross_entropy).toBeGreaterThan(qualityOnly.cross_entropy_floor + 0.05);
    expect(qualityOnly.cross_entropy).toBeLessThan(Math.LN2);
    expect(qualityOnly.cycle_reproduced).toBe(false);
  });
});

describe('the regularised floor', () => {
  const ref = [0.6, 0.25, 0.15];

  it('is π_ref itself when τ is huge, and its exploitability is the closed form', () => {
    const { policy, exploitability: e } = regularisedFloor(g, ref, 1e9);
    for (const [s, p] of policy.entries()) expect(p).toBeCloseTo(ref[s]!, 6);
    // max_s Σ_t π_ref(t)·σ(b·C[s][t]) − ½: style 2 beats style 0 (the most common).
    const closed = Math.max(
      ref[0]! * 0.5 + ref[1]! * sigmoid(g.b) + ref[2]! * sigmoid(-g.b),
      ref[0]! * sigmoid(-g.b) + ref[1]! * 0.5 + ref[2]! * sigmoid(g.b),
      ref[0]! * sigmoid(g.b) + ref[1]! * sigmoid(-g.b) + ref[2]! * 0.5,
    );
    expect(e).toBeCloseTo(closed - 0.5, 6);
  });

  it('solves the fixed point π ∝ π_ref·exp(P(s ≻ π)/τ), shrinking toward 0 as τ does', () => {
    const tau = 0.1;
    const { policy } = regularisedFloor(g, ref, tau);
    const wins = policy.map((_, s) =>
      policy.reduce(
        (acc, q, t) => acc + q * (s === t ? 0.5 : t === (s + 1) % 3 ? sigmoid(g.b) : sigmoid(-g.b)),
        0,
      ),
    );
    const unnorm = ref.map((r, s) => r * Math.exp(wins[s]! / tau));
    const z = unnorm.reduce((a, b) => a + b, 0);
    for (const [s, p] of policy.entries()) expect(p).toBeCloseTo(unnorm[s]! / z, 8);
    const floors = [0.1, 0.05, 0.02].map((t) => regularisedFloor(g, ref, t).exploitability);
    expect(floors[0]).toBeGreaterThan(floors[1]!);
    expect(floors[1]).toBeGreaterThan(floors[2]!);
    expect(styleExploitability(g, [1 / 3, 1 / 3, 1 / 3])).toBeCloseTo(0, 12);
  });
});

describe('the oracle judge', () => {
  it('gives the scorer logits whose pairwise probabilities are exactly P*', async () => {
    const judge = new OracleJudge(g);
    const t = [1, 6];
    const cands = [
      completionIds([1, 6]),
      completionIds([4, 1, 6]),
      completionIds([0, 2, 3, 5, 7, 8]),
      completionIds([2, 1]),
    ];
    const { logits } = await judge.compare(promptIds(t), cands);
    const prefs = prefsFromLogits(logits, 'pairwise');
    for (const [i, y] of cands.entries())
      for (const [j, y2] of cands.entries())
        if (i !== j) expect(prefs[i]![j]).toBeCloseTo(truePref(g, t, y, y2), 12);
    const { best } = await judge.rank(promptIds(t), cands, 'matrix');
    expect(quality(g, t, cands[best]!)).toBe(1);
  });
});
