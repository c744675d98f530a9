/**
 * `duel serve <role>`: one service process. Settings come from --config, the environment
 * (DUEL_*) and flags, validated before anything binds; the process serves gRPC with health and
 * reflection, runs ONNX Runtime in worker threads, and drains on SIGTERM/SIGINT.
 */
import type { Command } from 'commander';
import { Orchestrator } from '../../../services/orchestrator/driver.js';
import { RUNS_STREAM, RunEvents } from '../../../services/orchestrator/events.js';
import { ReplicaPool } from '../../../services/orchestrator/replicas.js';
import { memoryRunStore, openRunStore } from '../../../services/orchestrator/run-store.js';
import { runsService } from '../../../services/orchestrator/service.js';
import type { Workers } from '../../../services/orchestrator/stages.js';
import { SamplerCore, samplerService } from '../../../services/sampler/service.js';
import { ScorerCore, scorerService } from '../../../services/scorer/service.js';
import { TrainerCore, trainerService } from '../../../services/trainer/service.js';
import { cpuLimit, Runtime } from '../../engine/index.js';
import { DuelError } from '../../errors.js';
import type { ModelRef } from '../../gen/duel/v1/common.js';
import { PolicySamplerServiceClient } from '../../gen/duel/v1/sampler.js';
import { PreferenceScorerServiceClient } from '../../gen/duel/v1/scorer.js';
import { TrainerServiceClient } from '../../gen/duel/v1/trainer.js';
import { Admission } from '../../platform/admission.js';
import { ArtifactResolver } from '../../platform/artifact-resolver.js';
import type { ResolveArtifact } from '../../platform/artifacts.js';
import { isMemoryBus } from '../../platform/bus.js';
import { loadConfig } from '../../platform/config.js';
import { GrpcServer, type ServiceRegistration } from '../../platform/grpc/server.js';
import { createLogger, type Logger } from '../../platform/logger.js';
import { MemoryEventLog } from '../../platform/memory-bus.js';
import { ServiceMetrics } from '../../platform/metrics.js';
import { connectNats } from '../../platform/nats.js';
import { type ServiceConfig, serviceConfigSchema } from '../../platform/service-config.js';
import { channelCredentials, clientAuthorizer, serverCredentials } from '../../platform/tls.js';
import { Violations } from '../../platform/violations.js';
import { ackTrained, ensureWakeConsumer } from '../../platform/wake-consumer.js';
import { intFlag } from '../flags.js';

interface Role {
  registration: ServiceRegistration;
  /** Loads one `models.preload` entry (a model or judge reference). */
  preload?: (ref: ModelRef) => Promise<unknown>;
  /** Work once the server listens, before it reports SERVING (the orchestrator resumes runs). */
  ready?: () => Promise<void>;
  /** Stops the role's own work after the server drained (before the process exits). */
  close?: () => Promise<void>;
}

/** `runtime()` starts ONNX Runtime's worker threads on first call: the orchestrator never needs them. */
type RoleFactory = (
  runtime: () => Runtime,
  cfg: ServiceConfig,
  m: ServiceMetrics,
  log: Logger,
) => Promise<Role>;

const ROLES: Record<string, RoleFactory> = {
  sampler: async (runtime, cfg, m) =>
    loader(cfg, (resolve) => {
      const core = new SamplerCore(runtime(), undefined, m, admissionOf(cfg, runtime()), resolve);
      return { registration: samplerService(core), preload: (ref) => core.load(ref) };
    }),
  scorer: async (runtime, cfg, m) =>
    loader(cfg, (resolve) => {
      const core = new ScorerCore(runtime(), undefined, m, admissionOf(cfg, runtime()), resolve);
      return { registration: scorerService(core), preload: (ref) => core.load(ref) };
    }),
  trainer: async (runtime, cfg, m) => {
    const artifacts = artifactsOf(cfg);
    const durable = cfg.trainer.wakeConsumer;
    const nc = durable ? await connectNats(cfg.nats, 'duel-trainer') : undefined;
    const core = new TrainerCore(
      runtime(),
      await artifacts.publisher(),
      m,
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
  },
  orchestrator: startOrchestrator,
};

async function startOrchestrator(
  _runtime: () => Runtime,
  cfg: ServiceConfig,
  m: ServiceMetrics,
  log: Logger,
): Promise<Role> {
  const o = cfg.orchestrator;
  const v = new Violations();
  v.check(o.samplers.length > 0, 'orchestrator.samplers', 'at least one sampler address is required');
  v.check(o.scorers.length > 0, 'orchestrator.scorers', 'at least one scorer address is required');
  v.check(o.trainer !== '', 'orchestrator.trainer', 'the trainer address is required');
  v.throwIfAny();
  const memory = isMemoryBus(cfg.nats.url);
  const nc = memory ? undefined : await connectNats(cfg.nats, 'duel-orchestrator');
  if (memory)
    log.warn(
      'in-process bus (nats.url memory:): run events and records live in this process only; a restart loses every run, and no NATS consumer sees the events',
    );
  const artifacts = artifactsOf(cfg);
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
  const events = nc ? await RunEvents.open(nc) : new RunEvents(new MemoryEventLog());
  if (nc && o.trainerWakeConsumer)
    await ensureWakeConsumer(await nc.jetstreamManager(), RUNS_STREAM, o.trainerWakeConsumer);
  const orchestrator = new Orchestrator(
    nc ? await openRunStore(nc) : memoryRunStore(),
    events,
    workers,
    {
      callDeadlineMs: o.callDeadlineMs,
      trainDeadlineMs: o.trainDeadlineMs,
      promptsPerCall: o.promptsPerCall,
      maxWaitMs: o.maxWaitMs,
      resolve: (r) => artifacts.dir(r),
    },
    log,
    m,
  );
  return {
    registration: runsService(orchestrator),
    ready: async () => {
      await orchestrator.resumeAll();
    },
    close: async () => {
      await orchestrator.stop();
      workers.samplers.close();
      workers.scorers.close();
      workers.trainer.client.close();
      await artifacts.close();
      await nc?.drain();
    },
  };
}

const tlsMode = (t: ServiceConfig['tls']) => (t.cert === '' ? 'off' : t.clientAuth ? 'mutual' : 'server');

const artifactsOf = (cfg: ServiceConfig) => new ArtifactResolver(cfg.artifacts, cfg.nats);

/** A role that loads models by reference from either artifact store, closing the store's connection with it. */
function loader(cfg: ServiceConfig, make: (resolve: ResolveArtifact) => Role): Role {
  const artifacts = artifactsOf(cfg);
  return { ...make((r) => artifacts.dir(r)), close: () => artifacts.close() };
}

function admissionOf(cfg: ServiceConfig, runtime: Runtime): Admission {
  return new Admission(cfg.admission.maxActive || runtime.workers, cfg.admission.maxQueued);
}

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description(`run one service: ${Object.keys(ROLES).join(' | ')}`)
    .argument('<role>', 'which service')
    .option('--host <host>', 'interface to bind (default 127.0.0.1)')
    .option('--port <n>', 'gRPC port; 0 picks a free one', intFlag('--port', 0))
    .option('--nats <url>', 'NATS server URL')
    .option('--config <file>', 'a YAML or JSON config file')
    .action(async (role: string, o: { host?: string; port?: number; nats?: string; config?: string }) => {
      const make = ROLES[role];
      if (!make)
        throw DuelError.invalidArgument([
          {
            field: 'role',
            description: `unknown role '${role}' (this build serves ${Object.keys(ROLES).join(', ')})`,
          },
        ]);
      const overrides: Record<string, unknown> = {};
      if (o.host !== undefined) overrides.host = o.host;
      if (o.port !== undefined) overrides.port = o.port;
      if (o.nats !== undefined) overrides.nats = { url: o.nats };
      const cfg = loadConfig(serviceConfigSchema, { file: o.config, overrides });
      const logger = createLogger(role, { level: cfg.logLevel });
      // One worker per core the container may use, each single-threaded: requests run side by side.
      let started: Runtime | undefined;
      const runtime = () =>
        (started ??= new Runtime({
          workers: cfg.runtime.workers || Math.max(1, Math.min(cpuLimit(), 4)),
          intraOpThreads: 1,
          provider: cfg.runtime.provider,
        }));
      const metrics = new ServiceMetrics(role);
      const made = await make(runtime, cfg, metrics, logger);
      if (cfg.models.preload.length > 0 && !made.preload)
        throw DuelError.invalidArgument([
          { field: 'models.preload', description: `the ${role} has no models to preload` },
        ]);
      const server = new GrpcServer({
        logger,
        observe: metrics.observe,
        services: [made.registration],
        host: cfg.host,
        port: cfg.port,
        maxMessageBytes: cfg.grpc.maxMessageBytes,
        shutdownGraceMs: cfg.grpc.shutdownGraceMs,
        credentials: serverCredentials(cfg.tls),
        authorize: clientAuthorizer(cfg.tls),
      });
      const port = await server.start();
      if (cfg.metrics.port > 0) {
        const m = await metrics.serve(cfg.host, cfg.metrics.port);
        process.stderr.write(`duel ${role} metrics on http://${cfg.host}:${m.port}/metrics\n`);
      }
      server.exitOnSignals(async () => {
        await made.close?.();
        await started?.close();
      });
      // NOT_SERVING (health) until every configured model is loaded and verified.
      try {
        for (const entry of cfg.models.preload) {
          const [uri, sha256] = entry.split('#') as [string, string];
          await made.preload!({ artifact: { uri, sha256 }, name: 'preload' });
          logger.info({ uri }, 'preloaded');
        }
      } catch (e) {
        // Stop cleanly: exiting with ONNX Runtime's worker threads alive aborts the process.
        await server.shutdown('preload failed');
        await started?.close();
        throw e;
      }
      await made.ready?.();
      server.setServing(true);
      logger.info({ role, address: `${cfg.host}:${port}`, tls: tlsMode(cfg.tls) }, 'serving');
      process.stderr.write(`duel ${role} listening on ${cfg.host}:${port}\n`);
    });
}
