/**
 * `duel serve <role>`: one service process. Settings come from --config, the environment
 * (DUEL_*) and flags, validated before anything binds; the process serves gRPC with health and
 * reflection, runs ONNX Runtime in worker threads, and drains on SIGTERM/SIGINT.
 */
import type { Command } from 'commander';
import { SamplerCore, samplerService } from '../../../services/sampler/service.js';
import { ScorerCore, scorerService } from '../../../services/scorer/service.js';
import { TrainerCore, trainerService } from '../../../services/trainer/service.js';
import { cpuLimit, Runtime } from '../../engine/index.js';
import type { ModelRef } from '../../gen/duel/v1/common.js';
import { Admission } from '../../platform/admission.js';
import { FileArtifactStore } from '../../platform/artifacts.js';
import { loadConfig } from '../../platform/config.js';
import { DuelError } from '../../platform/errors.js';
import { GrpcServer, type ServiceRegistration } from '../../platform/grpc/server.js';
import { createLogger, type Logger } from '../../platform/logger.js';
import { ServiceMetrics } from '../../platform/metrics.js';
import { type ServiceConfig, serviceConfigSchema } from '../../platform/service-config.js';
import { intFlag } from '../flags.js';

/** The roles this build serves; the orchestrator arrives with the rest of issue #6. */
interface Role {
  registration: ServiceRegistration;
  /** Loads one `models.preload` entry (a model or judge reference). */
  preload?: (ref: ModelRef) => Promise<unknown>;
}

const ROLES: Record<string, (runtime: Runtime, cfg: ServiceConfig, m: ServiceMetrics, log: Logger) => Role> =
  {
    sampler: (runtime, cfg, m) => {
      const core = new SamplerCore(runtime, undefined, m, admissionOf(cfg, runtime));
      return { registration: samplerService(core), preload: (ref) => core.load(ref) };
    },
    scorer: (runtime, cfg, m) => {
      const core = new ScorerCore(runtime, undefined, m, admissionOf(cfg, runtime));
      return { registration: scorerService(core), preload: (ref) => core.load(ref) };
    },
    trainer: (runtime, cfg, m, log) => ({
      registration: trainerService(
        new TrainerCore(runtime, new FileArtifactStore(cfg.artifacts.root), m, log),
      ),
    }),
  };

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
      const runtime = new Runtime({ workers: Math.max(1, Math.min(cpuLimit(), 4)), intraOpThreads: 1 });
      const metrics = new ServiceMetrics(role);
      const made = make(runtime, cfg, metrics, logger);
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
      });
      const port = await server.start();
      if (cfg.metrics.port > 0) {
        const m = await metrics.serve(cfg.host, cfg.metrics.port);
        process.stderr.write(`duel ${role} metrics on http://${cfg.host}:${m.port}/metrics\n`);
      }
      server.exitOnSignals(() => runtime.close());
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
        await runtime.close();
        throw e;
      }
      server.setServing(true);
      logger.info({ role, address: `${cfg.host}:${port}` }, 'serving');
      process.stderr.write(`duel ${role} listening on ${cfg.host}:${port}\n`);
    });
}
