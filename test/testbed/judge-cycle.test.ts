/**
 * What the seeds' claim rests on: a pairwise judge trained on pairs labelled by the true preference
 * learns the style cycle, and a Bradley-Terry reward model trained on the same pairs cannot. On the
 * letters game with quality left out (a = 0) and a strong cycle (b = 3: P(s ≻ s+1) = σ(3) ≈ 0.95),
 * so P* is rock-paper-scissors over the first letter's style; through the product's judge training
 * and judge directories, graded by P* on pairs neither saw.
 */
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { duelJudge, trainJudge, trainRewardModel } from '../../src/algorithms/train-judge.js';
import { Runtime } from '../../src/engine/index.js';
import { initJudgeWeights } from '../../src/models/judge/model.js';
import { saveJudgeDir } from '../../src/models/judge/runner.js';
import { initRewardWeights } from '../../src/models/reward/model.js';
import { saveRewardDir } from '../../src/models/reward/runner.js';
import { buildSchema, judgeConfig, rewardConfig } from '../../src/testbed/build.js';
import { judgePairs } from '../../src/testbed/corpus.js';
import { judgeProbs } from '../../src/testbed/evaluate.js';
import { parseGame } from '../../src/testbed/game.js';
import { judgeFidelity } from '../../src/testbed/oracle.js';
import { fileTempDir } from '../helpers/tmp.js';

const runtime = new Runtime({ workers: 1, intraOpThreads: 1 });
afterAll(() => runtime.close());

const game = parseGame({ a: 0, b: 3 });
const build = buildSchema.parse({ 'judge.hidden_size': 32, 'judge.segment_embeddings': true });
const pairs = judgePairs(game, 2000, 1, 'soft');
const held = judgePairs(game, 400, 2).map((p) => ({ prompt: p.prompt, first: p.chosen, second: p.rejected }));
const loop = {
  optimizer: { kind: 'adamw' as const, weightDecay: 0 },
  lr: 3e-3,
  epochs: 24,
  batchSize: 64,
  gradClip: 1,
  schedule: 'cosine' as const,
  warmupSteps: 10,
  seed: 3,
};

async function fidelityOf(dir: string) {
  const jp = await judgeProbs(runtime, dir);
  try {
    return await judgeFidelity(game, jp.probs, held);
  } finally {
    await jp.release();
  }
}

describe('a learned judge on a game with a strong style cycle', () => {
  const dir = fileTempDir('judge-cycle-');

  it('the pairwise judge learns the cycle, each P(s ≻ s+1) within 0.1 of P*; a Bradley-Terry model of the same pairs cannot', async () => {
    const cfg = judgeConfig(game, build);
    const pairwise = await trainJudge(runtime, {
      judge: duelJudge(cfg),
      weights: initJudgeWeights(cfg, 1),
      pairs,
      ...loop,
    });
    saveJudgeDir(join(dir, 'pairwise'), cfg, pairwise.weights);
    const f = await fidelityOf(join(dir, 'pairwise'));
    expect(f.cycle_truth).toHaveLength(3);
    for (const [s, p] of f.cycle_probs.entries()) {
      expect(p).toBeGreaterThan(0.5);
      expect(Math.abs(p - f.cycle_truth[s]!)).toBeLessThan(0.1);
    }
    // Seeds 1–3 of this set-up came within 0.003 of the floor; 0.03 leaves room for other machines.
    expect(f.cross_entropy).toBeLessThan(f.cross_entropy_floor + 0.03);

    const rcfg = rewardConfig(game, build);
    const bt = await trainRewardModel(runtime, {
      config: rcfg,
      weights: initRewardWeights(rcfg, 1),
      pairs,
      ...loop,
    });
    saveRewardDir(join(dir, 'bt'), rcfg, bt.weights);
    const r = await fidelityOf(join(dir, 'bt'));
    // Rewards order the styles, so at least one of the three comparisons goes the wrong way.
    expect(r.cycle_reproduced).toBe(false);
    expect(r.cycle_probs.some((p, s) => Math.abs(p - r.cycle_truth[s]!) > 0.3)).toBe(true);
    expect(r.cross_entropy).toBeGreaterThan(f.cross_entropy + 0.1);
  }, 300_000);
});
