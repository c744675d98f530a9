/**
 * `duel serve trainer`: the TrainerService, publishing checkpoints into the configured artifact
 * store and, with a wake consumer, acknowledging each round it has trained (what KEDA scales on).
 */
import { z } from 'zod';
import { ArtifactResolver } from '../../src/platform/artifact-resolver.js';
import { connectNats } from '../../src/platform/nats.js';
import type { RoleContext } from '../../src/platform/role.js';
import { needsNats, serviceConfig } from '../../src/platform/service-config.js';
import { ackTrained } from '../../src/platform/wake-consumer.js';
import { RUNS_STREAM } from '../orchestrator/events.js';
import { TrainerCore, trainerService } from './service.js';

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
  const nc = durable ? await connectNats(cfg.nats, 'duel-trainer') : undefined;
  const core = new TrainerCore(
    runtime(),
    await artifacts.publisher(),
    metrics,
    (r) => artifacts.dir(r),
    async (run, round) => {
      if (nc) await ackTrained(nc.jetstream(), RUNS_STREAM, durable, run, round);
    },
  );
  return {
    registration: trainerService(core),
    close: async () => {
      await artifacts.close();
      await nc?.drain();
    },
  };
}
