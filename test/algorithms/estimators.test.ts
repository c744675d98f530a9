/** Win rates, winner and loser, and judge probabilities as docs/algorithms.md defines them. */
import { describe, expect, it } from 'vitest';
import {
  btScores,
  groupWinRate,
  klOnSamples,
  prefsFromLogits,
  winnerLoser,
  winRates,
} from '../../src/algorithms/estimators.js';
import { entropyOf } from '../../src/models/sampling.js';

const PREFS = [
  [0.5, 0.9, 0.6],
  [0.1, 0.5, 0.7],
  [0.4, 0.3, 0.5],
];

describe('estimators', () => {
  it('win rates include self (÷K) by default and exclude it (÷(K−1)) when asked', () => {
    expect(winRates(PREFS)).toEqual([2 / 3, 1.3 / 3, 1.2 / 3].map((x) => expect.closeTo(x, 12)));
    expect(winRates(PREFS, false)).toEqual([0.75, 0.4, 0.35].map((x) => expect.closeTo(x, 12)));
  });

  it('winner and loser break ties by the lower index', () => {
    expect(winnerLoser([0.2, 0.7, 0.7, 0.2])).toEqual({ winner: 1, loser: 0 });
  });

  it('judge probabilities: pairwise σ((C_ij − C_ji)/T) and Bradley-Terry σ(s_i − s_j), both antisymmetric', () => {
    const c = [
      [0, 1, -2],
      [0.5, 0, 3],
      [1, -1, 0],
    ];
    const pw = prefsFromLogits(c, 'pairwise', 2);
    expect(pw[0]![1]).toBeCloseTo(1 / (1 + Math.exp(-(1 - 0.5) / 2)), 12);
    expect(btScores(c)).toEqual([(1 - 0.5 + (-2 - 1)) / 2, (0.5 - 1 + (3 + 1)) / 2, (1 + 2 + (-1 - 3)) / 2]);
    const bt = prefsFromLogits(c, 'bt');
    const s0 = (1 - 0.5 + (-2 - 1)) / 2;
    const s1 = (0.5 - 1 + (3 + 1)) / 2;
    expect(bt[0]![1]).toBeCloseTo(1 / (1 + Math.exp(-(s0 - s1))), 12);
    for (const m of [pw, bt])
      for (let i = 0; i < 3; i++)
        for (let j = 0; j < 3; j++) expect(m[i]![j]! + m[j]![i]!).toBeCloseTo(1, 12);
  });

  it('KL on samples, and the next-token entropy the sampler reports', () => {
    expect(klOnSamples([-1, -2], [-1.5, -1])).toBeCloseTo(-0.25, 12);
    // entropyOf reads logits: any shift gives the same distribution.
    expect(entropyOf([3, 3])).toBeCloseTo(Math.log(2), 12);
    expect(entropyOf([Math.log(0.25) + 7, Math.log(0.75) + 7])).toBeCloseTo(
      -(0.25 * Math.log(0.25) + 0.75 * Math.log(0.75)),
      6,
    );
  });

  it('groupWinRate averages one group of candidates against another over every prompt', () => {
    // Two prompts, candidates [a, b | c]: a and b against c.
    const m1 = [
      [0.5, 0.4, 0.9],
      [0.6, 0.5, 0.7],
      [0.1, 0.3, 0.5],
    ];
    const m2 = [
      [0.5, 0.5, 0.2],
      [0.5, 0.5, 0.4],
      [0.8, 0.6, 0.5],
    ];
    expect(groupWinRate([m1, m2], [0, 2], [2, 3])).toBeCloseTo((0.9 + 0.7 + 0.2 + 0.4) / 4, 12);
    expect(groupWinRate([m1, m2], [2, 3], [0, 2])).toBeCloseTo((0.1 + 0.3 + 0.8 + 0.6) / 4, 12);
  });
});
