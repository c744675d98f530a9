/** The testbed's theory (src/testbed/tabular.ts): the exact tabular updates and the plug-in estimate's bias. */
import { describe, expect, it } from 'vitest';
import { referenceStyleWeights } from '../../src/testbed/corpus.js';
import { parseGame } from '../../src/testbed/game.js';
import { regularisedFloor, styleWinRates } from '../../src/testbed/oracle.js';
import { pluginBias, tabularDynamics } from '../../src/testbed/tabular.js';
import { duel } from '../helpers/toy.js';

const g = parseGame({});
const ref = [0.6, 0.25, 0.15];
const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

describe('tabular dynamics', () => {
  it('leaves the equilibrium where it is under SPPO’s step', () => {
    const r = tabularDynamics(g, [1 / 3, 1 / 3, 1 / 3], 8, 0, 10);
    for (const e of [...r.last, ...r.mixture]) expect(e).toBeCloseTo(0, 12);
  });

  it('settles INPO’s last iterate on the τ-regularised equilibrium, its floor', () => {
    const r = tabularDynamics(g, ref, 1, 0.1, 400);
    expect(r.last[400]).toBeCloseTo(regularisedFloor(g, ref, 0.1).exploitability, 6);
    expect(r.last[0]).toBeGreaterThan(r.last[400]!);
  });

  it('takes per-round η and τ: a schedule that switches to SPPO after round 2 equals the two runs chained', () => {
    const scheduled = tabularDynamics(g, ref, [2, 2, 4], [0.1, 0.1, 0], 5);
    const inpo2 = tabularDynamics(g, ref, 2, 0.1, 2);
    const sppo3 = tabularDynamics(g, styleAfter(2, 0.1, 2), 4, 0, 3);
    expect(scheduled.last[2]).toBeCloseTo(inpo2.last[2]!, 12);
    expect(scheduled.last[5]).toBeCloseTo(sppo3.last[3]!, 12);
  });

  it('reaches the Nash equilibrium, not the regularised one, when the reference follows the policy', () => {
    // τ = 0.2 pulls hard toward π_ref: a fixed reference settles on the floor (about 0.14) …
    const fixed = tabularDynamics(g, ref, 4, 0.2, 40);
    expect(fixed.last[40]).toBeCloseTo(regularisedFloor(g, ref, 0.2).exploitability, 3);
    expect(fixed.last[40]).toBeGreaterThan(0.1);
    // … while moving the reference to the policy every 3 rounds drives the last iterate to ~0.
    const moving = tabularDynamics(g, ref, 4, 0.2, 40, 3);
    expect(moving.last[20]).toBeLessThan(0.02);
    expect(moving.last[40]).toBeLessThan(moving.last[20]!);
  });

  it('keeps circling when the reference moves every 2 rounds at the demo’s η = 4, τ = 0.2', () => {
    // Two exact rounds do not reach the proximal point of a step this large, so a reference
    // moved that often carries the cycle along instead of damping it.
    const every2 = tabularDynamics(g, ref, 4, 0.2, 40, 2);
    expect(Math.min(...every2.last.slice(20))).toBeGreaterThan(0.05);
    expect(tabularDynamics(g, ref, 4, 0.2, 40, 3).last[40]).toBeLessThan(0.001);
  });

  it('keeps SPPO’s last iterate circling with a large step while its mixture closes in', () => {
    const r = tabularDynamics(g, ref, 8, 0, 20);
    expect(Math.min(...r.last.slice(10))).toBeGreaterThan(0.1);
    expect(r.mixture[20]).toBeLessThan(0.1);
  });
});

/** The styles after `rounds` exact INPO rounds from `ref` (what tabularDynamics iterates). */
function styleAfter(eta: number, tau: number, rounds: number): number[] {
  let pi = [...ref];
  for (let t = 0; t < rounds; t++) {
    const w = styleWinRates(g, pi);
    const l = pi.map((p, s) => (1 - eta * tau) * Math.log(p) + eta * tau * Math.log(ref[s]!) + eta * w[s]!);
    const z = l.reduce((a, x) => a + Math.exp(x), 0);
    pi = l.map((x) => Math.exp(x) / z);
  }
  return pi;
}

describe('the plug-in estimate’s bias', () => {
  it('is exactly σ(b) − ½ from one sample and shrinks as samples grow', () => {
    expect(pluginBias(g, 1, 100, 1)).toBeCloseTo(sigmoid(g.b) - 0.5, 12);
    const [b4, b16, b64] = [4, 16, 64].map((n) => pluginBias(g, n, 4000, 3));
    expect(b4).toBeGreaterThan(b16!);
    expect(b16).toBeGreaterThan(b64!);
    expect(b64).toBeGreaterThan(0);
  });

  it('is printed by duel testbed theory, which refuses keys other than game.*', async () => {
    const ok = await duel([
      'testbed',
      'theory',
      '--etas',
      '2',
      '--taus',
      '0,0.1',
      '--samples',
      '1',
      '--draws',
      '50',
    ]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/\| 0\.1 \(0\.\d{3}\) \| \d\.\d{3} \/ \d\.\d{3} \/ \d\.\d{3} \|/);
    expect(ok.stdout).toMatch(/\| 1 \| 0\.381 \|/);
    // The demo's moving reference: no floor, and the cell is the reference-following dynamics'.
    const moving = await duel([
      'testbed',
      'theory',
      '--etas',
      '4',
      '--taus',
      '0.2',
      '--samples',
      '1',
      '--draws',
      '1',
      '--reference-every',
      '3',
    ]);
    expect(moving.code, moving.stderr).toBe(0);
    expect(moving.stdout).toContain('the reference moved to the policy every 3 rounds');
    const last20 = tabularDynamics(g, referenceStyleWeights(g), 4, 0.2, 20, 3).last[20]!;
    expect(moving.stdout).toContain(`| 0.2 (0.000) | `);
    expect(moving.stdout).toContain(` / ${last20.toFixed(3)} / `);
    const negative = await duel(['testbed', 'theory', '--reference-every', '-1']);
    expect(negative.code).not.toBe(0);
    expect(negative.stderr).toMatch(/--reference-every/);
    const bad = await duel(['testbed', 'theory', '--set', 'run.lr=1']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/--set: only game\.\* keys apply here/);
  });
});
