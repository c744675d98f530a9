/**
 * `duel run` submits a run to an orchestrator (gRPC, or a message on NATS with `--nats`) and follows
 * its events until it ends; `--local` first starts the whole suite on loopback (local-cluster.ts). `duel runs list|get|watch|cancel`
 * talks to a running orchestrator.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { LocalCluster } from '../../client/local-cluster.js';
import { DEADLINE, describeEvent, followRun, runSummary, runsClient, submitRun } from '../../client/runs.js';
import { eventSummary, submitRunByMessage } from '../../client/runs-by-message.js';
import { DuelError } from '../../errors.js';
import { EventKind } from '../../gen/duel/v1/events.js';
import { RunState, type RunsServiceClient } from '../../gen/duel/v1/runs.js';
import { callUnary } from '../../platform/grpc/client.js';
import { readRunSpec } from '../../platform/run-spec.js';
import { inSpan, otlpEndpoint, startTracing } from '../../platform/tracing.js';

interface RunFlags {
  spec: string;
  server?: string;
  local?: boolean;
  nats?: string;
  artifacts: string;
  id?: string;
  detach?: boolean;
  controlPrefix: string;
}

/** Submits the run as the flags say (by gRPC, by message, or to a local cluster) and follows it. */
async function submit(o: RunFlags): Promise<void> {
  if (o.nats && !o.local && !o.server) {
    const last = await submitRunByMessage({ url: o.nats }, o.spec, {
      id: o.id,
      detach: o.detach,
      prefix: o.controlPrefix,
    });
    process.stdout.write(`${JSON.stringify(eventSummary(last))}\n`);
    const ok = o.detach || last.kind === EventKind.EVENT_KIND_RUN_FINISHED;
    if (!ok) process.exitCode = 1;
    return;
  }
  const spec = readRunSpec(o.spec);
  let cluster: LocalCluster | undefined;
  if (o.local) {
    const root = o.artifacts ? resolve(o.artifacts) : mkdtempSync(join(tmpdir(), 'duel-artifacts-'));
    cluster = await LocalCluster.start({
      artifactsRoot: root,
      natsUrl: o.nats,
      logDir: join(root, 'logs'),
    });
    process.stderr.write(
      cluster.bus === 'nats'
        ? `duel run --local: NATS at ${cluster.natsUrl}; services started (artifacts in ${root})\n`
        : `duel run --local: no nats-server installed, so the orchestrator's in-process bus carries the run (no restart safety); services started (artifacts in ${root})\n`,
    );
  }
  try {
    const run = await submitRun(o.server ?? cluster!.orchestrator.address, spec, {
      id: o.id,
      detach: o.detach,
    });
    process.stdout.write(`${JSON.stringify(runSummary(run))}\n`);
    if (!o.detach && run.state !== RunState.RUN_STATE_SUCCEEDED) process.exitCode = 1;
  } finally {
    await cluster?.stop();
  }
}

export function registerRun(program: Command): void {
  program
    .command('run')
    .description('submit a run (YAML/JSON spec) to an orchestrator and follow it to the end')
    .requiredOption('--spec <file>', 'the run spec')
    .option('--server <address>', 'the orchestrator (host:port)')
    .option('--local', 'start nats-server and the four services on loopback for this run')
    .option(
      '--nats <url>',
      'submit by message on this NATS (duel.ctl.run.submit) and follow the run; with --local: use this NATS server instead of starting one',
    )
    .option('--control-prefix <prefix>', 'with --nats: the control subjects prefix', 'duel.ctl')
    .option('--artifacts <dir>', 'with --local: the artifact store root', '')
    .option('--id <run-id>', 'choose the run id (idempotent: an existing id returns that run)')
    .option('--detach', 'return once the run is created')
    .action(async (o: RunFlags) => {
      if (!o.server && !o.local && !o.nats)
        throw DuelError.invalidArgument([
          { field: '--server', description: 'give --server ADDR, --nats URL or --local' },
        ]);
      // With OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT set, the run's trace starts here: the submit
      // carries this span's context, and the run joins it.
      const tracing = await startTracing('duel-cli', otlpEndpoint());
      try {
        await inSpan('duel run', { 'duel.spec': o.spec }, () => submit(o));
      } finally {
        await tracing?.shutdown();
      }
    });

  const runs = program.command('runs').description('list, inspect, follow or cancel runs on an orchestrator');
  const withClient = async (server: string, f: (c: RunsServiceClient) => Promise<void>) => {
    const c = runsClient(server);
    try {
      await f(c);
    } finally {
      c.close();
    }
  };
  runs
    .command('list')
    .requiredOption('--server <address>', 'the orchestrator')
    .action((o: { server: string }) =>
      withClient(o.server, async (c) => {
        const res = await callUnary(c, c.listRuns, { pageSize: 500, pageToken: '' }, DEADLINE, 'ListRuns');
        for (const r of res.runs) process.stdout.write(`${JSON.stringify(runSummary(r))}\n`);
      }),
    );
  runs
    .command('get')
    .argument('<run-id>')
    .requiredOption('--server <address>', 'the orchestrator')
    .action((runId: string, o: { server: string }) =>
      withClient(o.server, async (c) => {
        const res = await callUnary(c, c.getRun, { runId }, DEADLINE, 'GetRun');
        process.stdout.write(`${JSON.stringify(runSummary(res.run!), null, 2)}\n`);
      }),
    );
  runs
    .command('watch')
    .argument('<run-id>')
    .requiredOption('--server <address>', 'the orchestrator')
    .option('--from-start', 'replay the run from its first event')
    .action((runId: string, o: { server: string; fromStart?: boolean }) =>
      withClient(o.server, async (c) => {
        const run = (await callUnary(c, c.getRun, { runId }, DEADLINE, 'GetRun')).run!;
        const t0 = Date.now();
        const end = await followRun(c, runId, o.fromStart ?? false, (e) =>
          process.stderr.write(`${describeEvent(e, run.spec?.rounds ?? 0, t0)}\n`),
        );
        process.stdout.write(`${JSON.stringify(runSummary(end))}\n`);
      }),
    );
  runs
    .command('cancel')
    .argument('<run-id>')
    .requiredOption('--server <address>', 'the orchestrator')
    .option('--reason <text>', 'why', 'cancelled from the command line')
    .action((runId: string, o: { server: string; reason: string }) =>
      withClient(o.server, async (c) => {
        const res = await callUnary(c, c.cancelRun, { runId, reason: o.reason }, DEADLINE, 'CancelRun');
        process.stdout.write(`${JSON.stringify(runSummary(res.run!))}\n`);
      }),
    );
}
