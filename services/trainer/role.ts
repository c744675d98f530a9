/**
 * `duel serve trainer`: the TrainerService (and the TrainingService of client-driven sessions),
 * publishing checkpoints into the configured artifact
 * store and, with a wake consumer, acknowledging each round it has trained (what KEDA scales on).
 */
import { z } from 'zod';
import { ArtifactResolver } from '../../src/platform/artifact-resolver.js';
import type { NatsConnection } from '../../src/platform/nats.js';
import type { RoleContext } from '../../src/platform/role.js';
import { needsNats, serviceConfig } from '../../src/platform/service-config.js';
import { TrainerCore, trainerService } from './service.js';
import { TrainingSessions, trainingService } from './training-service.js';

export const config = serviceConfig(
  {
    trainer: z
      .object({
        /** Acknowledge rounds on this wake consumer once trained (the orchestrator's trainerWakeConsumer). */
        wakeConsumer: z.string().default(''),
      })
      .prefault({}),
  },
  (c, issue) => {
    if (c.trainer.wakeConsumer) needsNats(c, issue, ['trainer', 'wakeConsumer'], 'a wake consumer');
  },
);

export async function start({ cfg, runtime, metrics }: RoleContext<z.infer<typeof config>>) {
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
  const sessions = new TrainingSessions(core);
  return {
    registration: [trainerService(core), trainingService(sessions)],
    close: async () => {
      await sessions.closeAll();
      await artifacts.close();
      await nc?.drain();
    },
  };
}
