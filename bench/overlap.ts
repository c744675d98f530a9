/**
 * `duel bench overlap`: what overlapping rounds (max_staleness 1) save in wall time when sampling
 * and scoring have cores of their own and training has another, the deployment the setting is
 * for. The demo's run (its models built once, its INPO settings; its learned PairRM-style judge by
 * default, since the oracle costs the scorer nothing and a real judge's K×K comparisons are a
 * large share of a round; four epochs a round where the demo trains six, so that training takes
 * about as long as sampling and scoring, the regime overlap is for) goes through the local suite
 * twice, at max_staleness 0 and 1, with the sampler, scorer and orchestrator pinned
 * to one set of CPUs and the trainer to another (`taskset`); a round's wall time is the run's, created
 * to finished, over its rounds. The oracle's grades of both runs come with it, since time saved by
 * a run that no longer converges is not saved.
 */
import { join } from 'node:path';
import type { Runtime } from '../src/engine/index.js';
import { type DemoSummary, runDemo } from '../src/testbed/demo.js';

export interface OverlapRow {
  max_staleness: number;
  run_seconds: number;
  round_seconds: number;
  train_seconds: number;
  evaluate_seconds: number;
  /** At max_staleness 0, what is left of a round: sampling, scoring and the hand-offs (null when stages overlap). */
  sample_score_seconds: number | null;
  last_win_rate_vs_ref: number;
  last_exploitability: number;
}

export interface OverlapResult {
  rounds: number;
  cpus: { workers: string; trainer: string };
  rows: OverlapRow[];
  /** 1 − round time at max_staleness 1 / round time at 0. */
  saved: number;
}

export async function runOverlapBench(o: {
  rounds: number;
  seed: number;
  out: string;
  workerCpus: string;
  trainerCpus: string;
  /** `--set` pairs over the bench's own (`run.epochs` 4). */
  sets: Record<string, unknown>;
  judge: 'learned' | 'oracle';
  runtime: Runtime;
  log: (line: string) => void;
}): Promise<OverlapResult> {
  const rows: OverlapRow[] = [];
  for (const staleness of [0, 1]) {
    const summary: DemoSummary = await runDemo({
      algo: 'inpo',
      rounds: o.rounds,
      seed: o.seed,
      sets: { 'run.epochs': 4, ...o.sets, 'run.max_staleness': staleness },
      out: join(o.out, `max-staleness-${staleness}`),
      modelsDir: join(o.out, 'models'),
      judge: o.judge,
      bus: 'nats',
      runtime: o.runtime,
      cpus: {
        sampler: o.workerCpus,
        scorer: o.workerCpus,
        orchestrator: o.workerCpus,
        trainer: o.trainerCpus,
      },
      log: o.log,
    });
    const last = summary.rounds[summary.rounds.length - 1]!.oracle;
    rows.push({
      max_staleness: staleness,
      run_seconds: summary.run_seconds,
      round_seconds: summary.run_seconds / o.rounds,
      train_seconds: summary.stage_seconds.train,
      evaluate_seconds: summary.stage_seconds.evaluate,
      sample_score_seconds:
        staleness === 0
          ? summary.run_seconds / o.rounds - summary.stage_seconds.train - summary.stage_seconds.evaluate
          : null,
      last_win_rate_vs_ref: last.win_rate_vs_ref,
      last_exploitability: last.exploitability,
    });
    o.log(`max_staleness ${staleness}: ${(summary.run_seconds / o.rounds).toFixed(1)} s a round`);
  }
  return {
    rounds: o.rounds,
    cpus: { workers: o.workerCpus, trainer: o.trainerCpus },
    rows,
    saved: 1 - rows[1]!.round_seconds / rows[0]!.round_seconds,
  };
}
