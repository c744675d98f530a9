/**
 * `duel serve trainer`: the TrainerService (and the TrainingService of client-driven sessions),
 * publishing checkpoints into the configured artifact
 * store and, with a wake consumer, acknowledging each round it has trained (what KEDA scales on).
 */
import { hostname } from 'node:os';
import { z } from 'zod';
import { ArtifactResolver } from '../../src/platform/artifact-resolver.js';
import { isMemoryBus } from '../../src/platform/bus.js';
import type { NatsConnection } from '../../src/platform/nats.js';
import type { RoleContext } from '../../src/platform/role.js';
import { needsNats, serviceConfig } from '../../src/platform/service-config.js';
import { channelCredentials } from '../../src/platform/tls.js';
import { SessionForwarder } from './forwarding.js';
import { TrainerCore, trainerService } from './service.js';
import { memoryJournal, natsJournal, type SessionJournal } from './session-journal.js';
import { TrainingSessions } from './sessions.js';
import { trainingService } from './training-service.js';

export const config = serviceConfig(
  {
    trainer: z
      .object({
        /** Acknowledge rounds on this wake consumer once trained (the orchestrator's trainerWakeConsumer). */
        wakeConsumer: z.string().default(''),
        /**
         * Rounds and sessions recompute each layer's activations in the backward pass instead of
         * keeping them: a step's peak memory falls to the state and one layer's activations, for
         * one more forward pass (SmolLM-135M at 8 × 512 tokens: BENCHMARKS.md).
         */
        gradientCheckpointing: z.boolean().default(false),
        /**
         * On a float16 runtime (`runtime.dtype`), where rounds' and sessions' dynamic loss scale
         * starts and how many applied steps in a row double it (GradScaler's defaults). A round
         * starts where the round that made its policy ended.
         */
        lossScale: z
          .object({
            init: z
              .number()
              .positive()
              .default(2 ** 16),
            growthInterval: z.number().int().min(1).default(2000),
          })
          .prefault({}),
        /**
         * This replica's name as owner of training sessions; unique among live replicas
         * (Kubernetes: the pod name). Default: host name and process id.
         */
        id: z.string().default(''),
        /**
         * host:port where the other trainer replicas reach this one to forward a session's calls
         * (Kubernetes: the pod IP and port). Default: the gRPC host and the port it listens on.
         */
        advertise: z.string().default(''),
        /**
         * A replica renews its lease every third of this; one whose lease went unrenewed this long
         * has its sessions taken over by the replica their next call reaches.
         */
        leaseMs: z.number().int().min(300).default(15_000),
        sessions: z
          .object({
            /**
             * Snapshot a training session's whole state into the artifact store every this many
             * optimizer steps; a restore replays at most this many steps' calls.
             */
            snapshotEvery: z.number().int().min(1).default(10),
            /**
             * Write those snapshots while the session's next calls run (the journal covers the
             * session until one is written); false: before the answer of the step that takes it.
             */
            inBackground: z.boolean().default(true),
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
    { checkpointing: cfg.trainer.gradientCheckpointing, lossScale: cfg.trainer.lossScale },
  );
  // Sessions are journaled on NATS (opened with the first session call, so a trainer that serves
  // only rounds never connects for them), or in this process's memory on the in-process bus. The
  // NATS journal comes with this replica's lease, so several trainers share the sessions.
  let sessionsNc: NatsConnection | undefined;
  let journal: SessionJournal | undefined;
  const id = cfg.trainer.id || `${hostname()}-${process.pid}`;
  let advertise = cfg.trainer.advertise;
  let listening!: () => void;
  const known = new Promise<void>((resolve) => {
    listening = resolve;
  });
  const sessions: TrainingSessions = new TrainingSessions(core, {
    snapshotEvery: cfg.trainer.sessions.snapshotEvery,
    snapshotInBackground: cfg.trainer.sessions.inBackground,
    lowMemory: cfg.trainer.sessions.lowMemory,
    log,
    journal: async () => {
      if (isMemoryBus(cfg.nats.url)) return memoryJournal();
      const { connectNats } = await import('../../src/platform/nats.js');
      sessionsNc = await connectNats(cfg.nats, 'duel-trainer-sessions');
      await known;
      journal = await natsJournal(sessionsNc, {
        id,
        address: advertise,
        leaseMs: cfg.trainer.leaseMs,
        log,
        // Another replica may be taking this one's sessions: hold none of them any more.
        onLost: () => void sessions.release(),
      });
      return journal;
    },
  });
  metrics.sampled(
    'duel_trainer_sessions_open',
    'training sessions this replica holds now',
    () => sessions.loaded.sessions,
  );
  const forwarder = new SessionForwarder(() => id, channelCredentials(cfg.tls), {
    'grpc.max_receive_message_length': cfg.grpc.maxMessageBytes,
    'grpc.max_send_message_length': cfg.grpc.maxMessageBytes,
  });
  return {
    registration: [trainerService(core), trainingService(sessions, forwarder)],
    ready: async (at: { host: string; port: number }) => {
      // A wildcard listen address is no address to reach: the host name is the best guess.
      const wildcard = at.host === '0.0.0.0' || at.host === '::';
      advertise ||= `${wildcard ? hostname() : at.host}:${at.port}`;
      listening();
    },
    close: async () => {
      await sessions.release();
      // Deleting the lease hands this replica's sessions to the others at once.
      await journal?.leases?.stop(true);
      forwarder.close();
      await artifacts.close();
      await nc?.drain();
      await sessionsNc?.drain();
    },
  };
}
