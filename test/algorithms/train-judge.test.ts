/** Judge training learns a preference from labelled pairs and carries it to prompts it never saw. */
import { afterAll, describe, expect, it } from 'vitest';
import { duelJudge, trainJudge } from '../../src/algorithms/train-judge.js';
import { Runtime } from '../../src/engine/index.js';
import { rng } from '../../src/models/common/rng.js';
import { initJudgeWeights } from '../../src/models/judge/model.js';
import { JudgeRunner } from '../../src/models/judge/runner.js';
import { tinyJudgeConfig } from '../helpers/model-fixtures.js';

const cfg = tinyJudgeConfig();
const runtime = new Runtime({ workers: 1, intraOpThreads: 1 });
afterAll(() => runtime.close());

/** The truth to learn: more 3s is better than more 4s; prompts are noise. */
function pairs(n: number, seed: number) {
  const r = rng(seed);
  const word = () => 1 + Math.floor(r() * 10);
  return Array.from({ length: n }, () => {
    const prompt = Array.from({ length: 1 + Math.floor(r() * 3) }, word);
    const len = 1 + Math.floor(r() * 3);
    const good = Array.from({ length: len }, () => (r() < 0.7 ? 3 : word()));
    const bad = Array.from({ length: len }, () => (r() < 0.7 ? 4 : word()));
    return { prompt, chosen: good, rejected: bad };
  });
}

describe('judge training', () => {
  it('learns the labelled preference and generalises it to unseen prompts', async () => {
    const { weights, metrics } = await trainJudge(runtime, {
      judge: duelJudge(cfg),
      weights: initJudgeWeights(cfg, 1),
      pairs: pairs(64, 1),
      optimizer: { kind: 'adamw' },
      lr: 3e-3,
      epochs: 6,
      batchSize: 16,
      gradClip: 1,
      seed: 0,
    });
    expect(metrics).toMatchObject({ algo: 'judge', steps: 24, skipped_steps: 0, diverged: false });
    expect(metrics.loss_last).toBeLessThan(0.3);
    const judge = await JudgeRunner.create(runtime, cfg, weights);
    const held = pairs(40, 99);
    let right = 0;
    for (const p of held) {
      const { prefs } = await judge.compare(p.prompt, [p.chosen, p.rejected]);
      if (prefs[0]![1]! > 0.5) right++;
    }
    expect(right / held.length).toBeGreaterThan(0.9);
    await judge.release();
  });
});
