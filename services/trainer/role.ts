/**
 * `duel serve trainer`: the TrainerService (and the TrainingService of client-driven sessions),
 * publishing checkpoints into the configured artifact
 * store and, with a wake consumer, acknowledging each round it has trained (what KEDA scales on).
 */
import { z } from 'zod';
import { ArtifactResolver } from '../../src/platform/artifact-resolver.js';
import { isMemoryBus } from '../../src/platform/bus.js';
import type { NatsConnection } from '../../src/platform/nats.js';
import type { RoleContext } from '../../src/platform/role.js';
import { needsNats, serviceConfig } from '../../src/platform/service-config.js';
import { TrainerCore, trainerService } from './service.js';
import { memoryJournal, natsJournal } from './session-journal.js';
import { TrainingSessions } from './sessions.js';
import { trainingService } from './training-service.js';

export const config = serviceConfig(
  {
    trainer: z
      .object({
        /** Acknowledge rounds on this wake consumer once trained (the orchestrator's trainerWakeConsumer). */
        wakeConsumer: z.string().default(''),
        sessions: z
          .object({
            /**
             * Snapshot a training session's whole state into the artifact store every this many
             * optimizer steps; a restore replays at most this many steps' calls.
             */
            snapshotEvery: z.number().int().min(1).default(10),
            /**
             * Sessions return their activations' memory after each run (no ONNX Runtime arena):
             * LoRA sessions on the 21.9M model need 55 MB each instead of 422 (BENCHMARKS.md).
             */
            lowMemory: z.boolean().default(true),
          })
          .prefault({}),
      })
      .prefault({}),
  },
  (c, issue) => {
    if (c.trainer.wakeConsumer) needsNats(c, issue, ['trainer', 'wakeConsumer'], 'a wake consumer');
  },
);

export async function start({ cfg, runtime, metrics, log }: RoleContext<z.infer<typeof config>>) {
  const artifacts = new ArtifactResolver(cfg.artifacts, cfg.nats);
  const durable = cfg.trainer.wakeConsumer;
  let nc: NatsConnection | undefined;
  let acknowledge = async (_run: string, _round: number) => {};
  if (durable) {
    // The NATS client loads only for a trainer that acknowledges a wake queue.
    const [{ connectNats }, { ackTrained }, { RUNS_STREAM }] = await Promise.all([
      import('../../src/platform/nats.js'),
      import('../../src/platform/wake-consumer.js'),
      import('../orchestrator/events.js'),
    ]);
    const conn = await connectNats(cfg.nats, 'duel-trainer');
    nc = conn;
    acknowledge = async (run, round) => {
      await ackTrained(conn.jetstream(), RUNS_STREAM, durable, run, round);
    };
  }
  const core = new TrainerCore(
    runtime(),
    await artifacts.publisher(),
    metrics,
    (r) => artifacts.dir(r),
    acknowledge,
  );
  // Sessions are journaled on NATS (opened with the first session call, so a trainer that serves
  // only rounds never connects for them), or in this process's memory on the in-process bus.
  let sessionsNc: NatsConnection | undefined;
  const sessions = new TrainingSessions(core, {
    snapshotEvery: cfg.trainer.sessions.snapshotEvery,
    lowMemory: cfg.trainer.sessions.lowMemory,
    log,
    journal: async () => {
      if (isMemoryBus(cfg.nats.url)) return memoryJournal();
      const { connectNats } = await import('../../src/platform/nats.js');
      sessionsNc = await connectNats(cfg.nats, 'duel-trainer-sessions');
      return natsJournal(sessionsNc);
    },
  });
  return {
    registration: [trainerService(core), trainingService(sessions)],
    close: async () => {
      await sessions.release();
      await artifacts.close();
      await nc?.drain();
      await sessionsNc?.drain();
    },
  };
}
