/**
 * `duel bench snapshots`: what a training session's periodic snapshots cost the steps that follow.
 * Against `duel serve trainer` as a process (gRPC over loopback, the file artifact store, the
 * journal on a real nats-server when one is installed), one full-weight session runs the same
 * ForwardBackward + OptimStep steps three ways, each in a fresh trainer:
 *  - no snapshot among the timed steps (the baseline);
 *  - a snapshot every 10 optimizer steps, written while the next steps run (duel's default);
 *  - a snapshot every 10 optimizer steps written before the step's answer, as duel did before
 *    (`trainer.sessions.inBackground` false): the peer, measured in the same run.
 * Each step's time as the client sees it; the figures are p50, p95 and the slowest step.
 */
import { rmSync } from 'node:fs';
import { ServiceProcess } from '../src/client/local-cluster.js';
import { TrainingClient } from '../src/client/training.js';
import { MEMORY_BUS_URL } from '../src/platform/bus.js';
import { median, quantile, timeRuns } from './measure.js';
import { batchOf, sessionBenchStage } from './sessions.js';

export interface SnapshotsBenchOptions {
  /** A DECODE_MODELS name (default 25M, the 21.9M-parameter model). */
  model?: string;
  /** Timed steps per variant (snapshots fall on every 10th). */
  steps: number;
  batch: number;
  tokens: number;
  log: (line: string) => void;
}

export interface SnapshotVariant {
  variant: 'none' | 'background' | 'inline';
  p50_ms: number;
  p95_ms: number;
  max_ms: number;
  mean_ms: number;
  /** p95 against the no-snapshot variant's p95 (the goal: at most 1.10). */
  p95_vs_none: number;
}

export interface SnapshotsBenchResult {
  model: string;
  params: number;
  batch: number;
  tokens: number;
  steps: number;
  journal: 'nats' | 'memory';
  /** Bytes of one snapshot's state (weights, AdamW's two slots, accumulators). */
  state_bytes: number;
  variants: SnapshotVariant[];
}

export async function runSnapshotsBench(o: SnapshotsBenchOptions): Promise<SnapshotsBenchResult> {
  const model = o.model ?? '25M';
  const { cfg, root, nats, store, params, base } = await sessionBenchStage(model, 'duel-bench-snapshots-');
  const data = batchOf(cfg, o.batch, o.tokens);
  const variants: SnapshotVariant[] = [];
  try {
    for (const variant of ['none', 'background', 'inline'] as const) {
      const trainer = new ServiceProcess(
        'trainer',
        `trainer-${variant}`,
        {
          DUEL_NATS_URL: nats?.url ?? MEMORY_BUS_URL,
          DUEL_ARTIFACTS_ROOT: store.root,
          DUEL_TRAINER_SESSIONS_SNAPSHOT_EVERY: variant === 'none' ? '1000000' : '10',
          DUEL_TRAINER_SESSIONS_IN_BACKGROUND: String(variant !== 'inline'),
          DUEL_LOG_LEVEL: 'info',
        },
        root,
      );
      await trainer.start();
      const client = new TrainingClient(trainer.address);
      try {
        const s = await client.createSession({
          base,
          optimizer: { name: 'adamw', learningRate: 1e-4, gradClip: 1 },
        });
        const step = async () => {
          await s.forwardBackward('cross_entropy', data);
          await s.optimStep();
        };
        await step();
        const ms = await timeRuns(o.steps, async () => {
          await step();
          o.log(`${variant}: step ${s.seq / 2} of ${o.steps + 1}`);
        });
        const none = variants[0]?.p95_ms;
        const p95 = quantile(ms, 0.95);
        variants.push({
          variant,
          p50_ms: median(ms),
          p95_ms: p95,
          max_ms: Math.max(...ms),
          mean_ms: ms.reduce((a, b) => a + b, 0) / ms.length,
          p95_vs_none: none ? p95 / none : 1,
        });
        o.log(
          `${variant}: p50 ${median(ms).toFixed(0)} ms, p95 ${p95.toFixed(0)} ms, slowest ${Math.max(...ms).toFixed(0)} ms`,
        );
      } finally {
        client.close();
        await trainer.stop();
      }
    }
  } finally {
    await nats?.stop();
    rmSync(root, { recursive: true, force: true });
  }
  return {
    model,
    params,
    batch: o.batch,
    tokens: o.tokens,
    steps: o.steps,
    journal: nats ? 'nats' : 'memory',
    // AdamW: weights, two slots and the gradient accumulators, float32.
    state_bytes: params * 4 * 4,
    variants,
  };
}
