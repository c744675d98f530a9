/**
 * `duel serve orchestrator`: the RunsService over sampler, scorer and trainer replicas, keeping run
 * records and events in JetStream (or, on the in-process bus, in its own memory) and resuming every
 * unfinished run when it starts.
 */
import { hostname } from 'node:os';
import { z } from 'zod';
import { PolicySamplerServiceClient } from '../../src/gen/duel/v1/sampler.js';
import { PreferenceScorerServiceClient } from '../../src/gen/duel/v1/scorer.js';
import { TrainerServiceClient } from '../../src/gen/duel/v1/trainer.js';
import { ArtifactResolver } from '../../src/platform/artifact-resolver.js';
import { isMemoryBus } from '../../src/platform/bus.js';
import { MemoryEventLog } from '../../src/platform/memory-bus.js';
import { connectNats } from '../../src/platform/nats.js';
import type { Role, RoleContext } from '../../src/platform/role.js';
import { needsNats, serviceConfig } from '../../src/platform/service-config.js';
import { channelCredentials } from '../../src/platform/tls.js';
import { Violations } from '../../src/platform/violations.js';
import { ensureWakeConsumer } from '../../src/platform/wake-consumer.js';
import { ControlConsumer } from './control.js';
import { Orchestrator } from './driver.js';
import { RUNS_STREAM, RunEvents } from './events.js';
import { ReplicaPool } from './replicas.js';
import { RunPages } from './run-pages.js';
import { memoryRunStore, openRunStore } from './run-store.js';
import { runsService } from './service.js';
import type { Workers } from './stages.js';

export const config = serviceConfig(
  {
    orchestrator: z
      .object({
        /** Sampler replica addresses (host:port), each stage sharded over them. */
        samplers: z.array(z.string().min(1)).default([]),
        scorers: z.array(z.string().min(1)).default([]),
        trainer: z.string().default(''),
        /** Deadline of one Sample or Compare call. */
        callDeadlineMs: z.number().int().min(100).default(600_000),
        /** Deadline of one TrainRound call (the whole round's training). */
        trainDeadlineMs: z
          .number()
          .int()
          .min(100)
          .default(6 * 3_600_000),
        /** Prompts per Sample/Compare call: the shard size. */
        promptsPerCall: z.number().int().min(1).default(32),
        /** How long a stage waits for any replica of a role before the round fails. */
        maxWaitMs: z.number().int().min(0).default(120_000),
        /**
         * The durable consumer of rounds waiting for training (src/platform/wake-consumer.ts),
         * created at start when set: what KEDA scales a trainer from zero on. Empty: none.
         */
        trainerWakeConsumer: z.string().default(''),
        /**
         * This replica's name in run leases and answers; unique among live replicas (Kubernetes:
         * the pod name). Default: host name and process id.
         */
        id: z.string().default(''),
        /**
         * A run's driver renews its lease every third of this; a replica that sees a lease
         * unrenewed for this long takes the run over (docs/runs.md "Orchestrator replicas").
         */
        leaseMs: z.number().int().min(300).default(15_000),
        /**
         * Where clients reach the live run pages (an ingress URL, as https://duel.example.com):
         * answers name each run's page under it. Empty: this process's HTTP port (metrics.port;
         * with 0 there is no page).
         */
        pageUrl: z.string().default(''),
        /** Runs by message (services/orchestrator/control.ts); on NATS only. */
        control: z
          .object({
            enabled: z.boolean().default(true),
            stream: z.string().min(1).default('DUEL_CTL'),
            /** Subjects `<prefix>.run.submit` and `<prefix>.run.<run_id>.cancel`. */
            prefix: z
              .string()
              .regex(/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/, 'must be NATS subject tokens without wildcards')
              .default('duel.ctl'),
            consumer: z.string().min(1).default('duel-orchestrator'),
            ackWaitMs: z.number().int().min(1000).default(30_000),
            /** Deliveries of a message that fails for a passing reason before it is rejected. */
            maxDeliver: z.number().int().min(1).default(5),
            /** Where relative paths in a submitted spec are read from. Default: the working directory. */
            specRoot: z.string().default(''),
          })
          .prefault({}),
      })
      .prefault({}),
  },
  (c, issue) => {
    if (c.orchestrator.trainerWakeConsumer)
      needsNats(c, issue, ['orchestrator', 'trainerWakeConsumer'], 'a wake consumer');
  },
);

export async function start({ cfg, metrics: m, log }: RoleContext<z.infer<typeof config>>): Promise<Role> {
  const o = cfg.orchestrator;
  const v = new Violations();
  v.check(o.samplers.length > 0, 'orchestrator.samplers', 'at least one sampler address is required');
  v.check(o.scorers.length > 0, 'orchestrator.scorers', 'at least one scorer address is required');
  v.check(o.trainer !== '', 'orchestrator.trainer', 'the trainer address is required');
  v.throwIfAny();
  const id = o.id || `${hostname()}-${process.pid}`;
  const memory = isMemoryBus(cfg.nats.url);
  const nc = memory ? undefined : await connectNats(cfg.nats, 'duel-orchestrator');
  if (memory)
    log.warn(
      'in-process bus (nats.url memory:): run events and records live in this process only; a restart loses every run, and no NATS consumer sees the events',
    );
  const artifacts = new ArtifactResolver(cfg.artifacts, cfg.nats);
  const creds = channelCredentials(cfg.tls);
  const limits = {
    'grpc.max_receive_message_length': cfg.grpc.maxMessageBytes,
    'grpc.max_send_message_length': cfg.grpc.maxMessageBytes,
  };
  const pool = { maxWaitMs: o.maxWaitMs, backoffMs: 250 };
  const workers: Workers = {
    samplers: new ReplicaPool(
      'sampler',
      o.samplers,
      (a) => new PolicySamplerServiceClient(a, creds, limits),
      log,
      pool,
    ),
    scorers: new ReplicaPool(
      'scorer',
      o.scorers,
      (a) => new PreferenceScorerServiceClient(a, creds, limits),
      log,
      pool,
    ),
    trainer: { address: o.trainer, client: new TrainerServiceClient(o.trainer, creds, limits) },
  };
  // The event stream and the run bucket are independent round trips to NATS: checked side by side.
  const [events, runs] = nc
    ? await Promise.all([RunEvents.open(nc), openRunStore(nc)])
    : [new RunEvents(new MemoryEventLog()), memoryRunStore()];
  if (nc && o.trainerWakeConsumer)
    await ensureWakeConsumer(await nc.jetstreamManager(), RUNS_STREAM, o.trainerWakeConsumer);
  const orchestrator = new Orchestrator(
    runs,
    events,
    workers,
    {
      id,
      leaseMs: o.leaseMs,
      callDeadlineMs: o.callDeadlineMs,
      trainDeadlineMs: o.trainDeadlineMs,
      promptsPerCall: o.promptsPerCall,
      maxWaitMs: o.maxWaitMs,
      resolve: (r) => artifacts.dir(r),
      store: await artifacts.publisher(),
    },
    log,
    m,
  );
  const control =
    nc && o.control.enabled
      ? await ControlConsumer.open(
          nc,
          { ...o.control, specRoot: o.control.specRoot || process.cwd(), source: `/duel/orchestrator/${id}` },
          orchestrator,
          log,
        )
      : undefined;
  const pages = new RunPages(orchestrator, log, o.pageUrl);
  return {
    registration: runsService(orchestrator, pages),
    http: (req, res) => pages.handle(req, res),
    ready: async ({ host, httpPort }) => {
      if (httpPort !== undefined) pages.listening(host, httpPort);
      await orchestrator.resumeAll();
      orchestrator.watchLeases();
      control?.start();
    },
    close: async () => {
      pages.close();
      await control?.stop();
      await orchestrator.stop();
      workers.samplers.close();
      workers.scorers.close();
      workers.trainer.client.close();
      await artifacts.close();
      await nc?.drain();
    },
  };
}
