/**
 * `duel serve <role>`: one service process. Only the chosen role's module is loaded
 * (services/<role>/role.ts: its config schema and start). Settings come from --config, the
 * environment (DUEL_*) and flags, validated against that role's schema before anything binds; the
 * process serves gRPC with health and reflection, runs ONNX Runtime in worker threads, and drains
 * on SIGTERM/SIGINT.
 */
import type { Command } from 'commander';
// The runtime alone, not the engine's barrel: a service that only serves never traces a graph.
import { cpuLimit, Runtime } from '../../engine/runtime/runtime.js';
import { DuelError } from '../../errors.js';
import { loadConfig } from '../../platform/config.js';
import { GrpcServer } from '../../platform/grpc/server.js';
import { createLogger } from '../../platform/logger.js';
import { ServiceMetrics } from '../../platform/metrics.js';
import type { RoleModule } from '../../platform/role.js';
import type { ServiceConfig } from '../../platform/service-config.js';
import { clientAuthorizer, serverCredentials } from '../../platform/tls.js';
import { otlpEndpoint, startTracing } from '../../platform/tracing.js';
import { intFlag } from '../flags.js';

export const ROLES: Record<string, () => Promise<unknown>> = {
  sampler: () => import('../../../services/sampler/role.js'),
  scorer: () => import('../../../services/scorer/role.js'),
  trainer: () => import('../../../services/trainer/role.js'),
  orchestrator: () => import('../../../services/orchestrator/role.js'),
};

/** Loads a role's module; an unknown name is INVALID_ARGUMENT listing the known ones. */
export async function roleModule(role: string): Promise<RoleModule> {
  const load = ROLES[role];
  if (!load)
    throw DuelError.invalidArgument([
      {
        field: 'role',
        description: `unknown role '${role}' (this build serves ${Object.keys(ROLES).join(', ')})`,
      },
    ]);
  // Each role.ts exports `config` (serviceConfig(...) of its own section) and a `start` taking what
  // that schema parses: the RoleModule shape, which a dynamic import cannot state.
  return (await load()) as RoleModule;
}

const tlsMode = (t: { cert: string; clientAuth: boolean }) =>
  t.cert === '' ? 'off' : t.clientAuth ? 'mutual' : 'server';

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
      const module = await roleModule(role);
      const overrides: Record<string, unknown> = {};
      if (o.host !== undefined) overrides.host = o.host;
      if (o.port !== undefined) overrides.port = o.port;
      if (o.nats !== undefined) overrides.nats = { url: o.nats };
      const cfg = loadConfig(module.config, { file: o.config, overrides }) as ServiceConfig;
      const logger = createLogger(role, { level: cfg.logLevel });
      const tracing = await startTracing(`duel-${role}`, otlpEndpoint(cfg.telemetry.otlp.endpoint));
      if (tracing) logger.info({ endpoint: otlpEndpoint(cfg.telemetry.otlp.endpoint) }, 'tracing');
      if (cfg.runtime.provider === 'webgpu') {
        // Which GPU, said once at start; none is an error naming what to install, not a crash later.
        const { requireAdapter } = await import('../../platform/gpu-adapter.js');
        logger.info({ adapter: await requireAdapter() }, 'webgpu adapter');
      }
      // One worker per core the container may use, each single-threaded: requests run side by side.
      let started: Runtime | undefined;
      const runtime = () =>
        (started ??= new Runtime({
          workers: cfg.runtime.workers || Math.max(1, Math.min(cpuLimit(), 4)),
          intraOpThreads: 1,
          provider: cfg.runtime.provider,
          dtype: cfg.runtime.dtype,
        }));
      const metrics = new ServiceMetrics(role);
      const made = await module.start({ cfg, runtime, metrics, log: logger });
      const server = new GrpcServer({
        logger,
        observe: metrics.observe,
        services: [made.registration].flat(),
        host: cfg.host,
        port: cfg.port,
        maxMessageBytes: cfg.grpc.maxMessageBytes,
        shutdownGraceMs: cfg.grpc.shutdownGraceMs,
        credentials: serverCredentials(cfg.tls),
        authorize: clientAuthorizer(cfg.tls),
      });
      const port = await server.start();
      let httpPort: number | undefined;
      if (cfg.metrics.port > 0) {
        const m = await metrics.serve(cfg.host, cfg.metrics.port, made.http);
        httpPort = m.port;
        process.stderr.write(`duel ${role} metrics on http://${cfg.host}:${m.port}/metrics\n`);
      }
      server.exitOnSignals(async () => {
        await made.close?.();
        await started?.close();
        await tracing?.shutdown();
      });
      // NOT_SERVING (health) until every configured model is loaded and verified.
      try {
        await made.preload?.();
      } catch (e) {
        // Stop cleanly: exiting with ONNX Runtime's worker threads alive aborts the process.
        await server.shutdown('preload failed');
        await started?.close();
        throw e;
      }
      await made.ready?.({ host: cfg.host, port, httpPort });
      server.setServing(true);
      // The metrics library loads once serving; what was observed before is replayed into it.
      void metrics.load();
      // DUEL_CODE_CACHE: set by the code-cache launcher (src/cli/serve-launcher.ts) to what V8 did with its cache.
      const codeCache = process.env.DUEL_CODE_CACHE;
      logger.info(
        { role, address: `${cfg.host}:${port}`, tls: tlsMode(cfg.tls), ...(codeCache ? { codeCache } : {}) },
        'serving',
      );
      process.stderr.write(`duel ${role} listening on ${cfg.host}:${port}\n`);
    });
}
