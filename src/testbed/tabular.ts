/**
 * The testbed's theory, computed: what a perfect implementation would do on the style sub-game at
 * full quality (docs/testbed.md, "What the theory predicts"), and how far the plug-in exploitability
 * estimate from n samples a prompt is from the truth. `duel testbed theory` prints both; the
 * measured runs in docs/RESULTS.md are read against them.
 */
import { rng } from '../models/common/rng.js';
import type { GameConfig } from './game.js';
import { styleExploitability, styleWinRates } from './oracle.js';

export interface TabularRun {
  /** Exploitability of π_t, t = 0 (π_ref) .. rounds. */
  last: number[];
  /** Exploitability of the uniform mixture of π_1..π_t (index 0: π_ref). */
  mixture: number[];
}

/**
 * INPO's exact round, π_{t+1} ∝ π_t^(1−ητ)·π_ref^(ητ)·exp(η·P(s ≻ π_t)) (docs/algorithms.md); τ = 0 is
 * SPPO's multiplicative-weights step. η and τ may be per-round lists (round t takes entry t−1,
 * the last repeating), as a run's hyper-parameter schedule gives them. With `anchorEvery` = N > 0
 * the reference becomes the current policy after every N rounds (RunSpec.reference_update_every).
 */
export function tabularDynamics(
  g: GameConfig,
  ref: number[],
  etas: number | number[],
  taus: number | number[],
  rounds: number,
  anchorEvery = 0,
): TabularRun {
  const at = (v: number | number[], t: number) => (typeof v === 'number' ? v : v[Math.min(t, v.length) - 1]!);
  let pi = [...ref];
  let anchor = [...ref];
  const sum = ref.map(() => 0);
  const out: TabularRun = { last: [styleExploitability(g, pi)], mixture: [styleExploitability(g, pi)] };
  for (let t = 1; t <= rounds; t++) {
    const [eta, tau] = [at(etas, t), at(taus, t)];
    const w = styleWinRates(g, pi);
    const logits = pi.map(
      (p, s) =>
        (1 - eta * tau) * Math.log(Math.max(p, 1e-300)) +
        eta * tau * Math.log(Math.max(anchor[s]!, 1e-300)) +
        eta * w[s]!,
    );
    const top = Math.max(...logits);
    const e = logits.map((l) => Math.exp(l - top));
    const z = e.reduce((a, b) => a + b, 0);
    pi = e.map((x) => x / z);
    if (anchorEvery > 0 && t % anchorEvery === 0) anchor = [...pi];
    pi.forEach((p, s) => {
      sum[s]! += p;
    });
    out.last.push(styleExploitability(g, pi));
    out.mixture.push(
      styleExploitability(
        g,
        sum.map((x) => x / t),
      ),
    );
  }
  return out;
}

/**
 * The plug-in exploitability an exactly even policy at full quality gets from n samples a prompt,
 * averaged over `draws` prompts: the bias of estimating max_s P(s ≻ π) from n-sample means.
 */
export function pluginBias(g: GameConfig, n: number, draws: number, seed: number): number {
  const draw = rng(seed);
  let total = 0;
  for (let d = 0; d < draws; d++) {
    const counts = new Array<number>(g.n_styles).fill(0);
    for (let i = 0; i < n; i++) counts[Math.min(g.n_styles - 1, Math.floor(draw() * g.n_styles))]! += 1;
    total += styleExploitability(
      g,
      counts.map((c) => c / n),
    );
  }
  return total / draws;
}
