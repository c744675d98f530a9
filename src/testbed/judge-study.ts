/**
 * `duel testbed judge`: the testbed's learned judge built alone, as `duel demo` builds it, and
 * graded against P* on the demo's held-out pairs. What docs/notebook.md's judge measurements are
 * made with: one setting per run (`--set judge.*`, `data.*`, `game.*`), a minute or two each.
 */
import { join, resolve } from 'node:path';
import type { Runtime } from '../engine/index.js';
import { DuelError } from '../errors.js';
import { buildJudge } from './build.js';
import { demoSettings, stageProgress } from './demo.js';
import { heldOutFidelity } from './evaluate.js';

export interface JudgeStudyOptions {
  runtime: Runtime;
  /** game.*, judge.* and data.* keys, as `duel demo --set` takes them. */
  sets: Record<string, unknown>;
  seed: number;
  out: string;
  log: (line: string) => void;
}

export async function studyJudge(o: JudgeStudyOptions) {
  const other = Object.keys(o.sets).filter((k) => !/^(game|judge|data)\./.test(k));
  if (other.length > 0)
    throw DuelError.invalidArgument(
      other.map((k) => ({
        field: `--set ${k}`,
        description: 'the judge is built from game.*, judge.* and data.* keys only',
      })),
    );
  const { game, build } = demoSettings('', o.sets);
  const dir = join(resolve(o.out), 'judge');
  const { metrics } = await buildJudge(o.runtime, game, build, dir, o.seed, stageProgress(o.log));
  const fidelity = await heldOutFidelity(o.runtime, game, dir, o.seed);
  return {
    judge: dir,
    seed: o.seed,
    game,
    build,
    training: {
      steps: metrics.steps,
      loss_first: metrics.loss_first,
      loss_last: metrics.loss_last,
      seconds: metrics.seconds,
    },
    fidelity,
  };
}
