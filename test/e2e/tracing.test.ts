/**
 * One trace per run, across processes: `duel run` (the built command) submits a 2-round run to
 * the suite (nats-server, a sampler, a scorer, the trainer, the orchestrator as processes), every
 * process exporting OTLP/HTTP to a receiver in this test, which stands in for the collector.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '../../src/client/local-cluster.js';
import { DEADLINE, runsClient } from '../../src/client/runs.js';
import { callUnary } from '../../src/platform/grpc/client.js';
import { freePort } from '../../src/platform/nats-server.js';
import { duelBin } from '../../src/platform/paths.js';
import { writeTinyRun, writeTinySpec } from '../helpers/tiny-run.js';

interface Received {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  attributes: Record<string, unknown>;
  events: { name: string; attributes: Record<string, unknown> }[];
}

type KeyValue = { key: string; value: Record<string, unknown> };
const attrs = (kvs: KeyValue[] = []) =>
  Object.fromEntries(kvs.map((kv) => [kv.key, Object.values(kv.value)[0]]));

const ROUND_STAGES = ['started', 'sampled', 'scored', 'trained', 'evaluated', 'completed'].map(
  (s) => `stage ${s}`,
);

let root: string;
let cluster: LocalCluster;
let receiver: Server;
let endpoint: string;
const spans: Received[] = [];

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'duel-tracing-'));
  writeTinyRun(root);
  // The collector's OTLP/HTTP JSON endpoint: every batch's spans, by the process that sent them.
  receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      const msg = JSON.parse(body) as {
        resourceSpans: {
          resource: { attributes: KeyValue[] };
          scopeSpans: {
            spans: (Omit<Received, 'service' | 'attributes' | 'events'> & {
              attributes: KeyValue[];
              events?: { name: string; attributes: KeyValue[] }[];
            })[];
          }[];
        }[];
      };
      for (const rs of msg.resourceSpans) {
        const service = String(attrs(rs.resource.attributes)['service.name']);
        for (const ss of rs.scopeSpans)
          for (const s of ss.spans)
            spans.push({
              ...s,
              service,
              parentSpanId: s.parentSpanId ?? '',
              attributes: attrs(s.attributes),
              events: (s.events ?? []).map((e) => ({ name: e.name, attributes: attrs(e.attributes) })),
            });
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  const port = await freePort();
  await new Promise<void>((resolve) => receiver.listen(port, '127.0.0.1', resolve));
  endpoint = `http://127.0.0.1:${port}/v1/traces`;
  cluster = await LocalCluster.start({
    samplers: 1,
    scorers: 1,
    artifactsRoot: join(root, 'artifacts'),
    logDir: join(root, 'logs'),
    env: { DUEL_TELEMETRY_OTLP_ENDPOINT: endpoint, OTEL_BSP_SCHEDULE_DELAY: '200' },
  });
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
  receiver?.close();
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('a run traced across the suite', () => {
  it('is one trace from duel run to the trainer, parent to child across processes, ids in the logs', async () => {
    const duelRun = async (id: string, extra: Record<string, unknown> = {}) => {
      const cli = spawn(
        process.execPath,
        [
          duelBin(),
          'run',
          '--spec',
          writeTinySpec(root, id, extra),
          '--server',
          cluster.orchestrator.address,
          '--id',
          id,
        ],
        {
          env: {
            ...process.env,
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: endpoint,
            OTEL_BSP_SCHEDULE_DELAY: '200',
          },
        },
      );
      let stderr = '';
      cli.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const [code] = await once(cli, 'exit');
      expect(code, stderr).toBe(0);
    };
    await duelRun('traced');
    // Rounds that overlap run their stages in three loops; each round still has its span.
    await duelRun('overlapped', { max_staleness: 1 });
    // A run whose orchestrator restarts after round 1 stays one trace (its record keeps the
    // context that created it); `duel run` watches again and sees it to the end.
    const resumed = duelRun('resumed', { rounds: 3 });
    const c = runsClient(cluster.orchestrator.address);
    const roundOneDone = async () =>
      (await callUnary(c, c.getRun, { runId: 'resumed' }, DEADLINE, 'GetRun').catch(() => undefined))?.run
        ?.rounds[0]?.finishedAt !== undefined;
    while (!(await roundOneDone())) await new Promise((r) => setTimeout(r, 50));
    c.close();
    await cluster.orchestrator.stop();
    await cluster.orchestrator.start();
    await resumed;
    // The services flush what they hold when they stop.
    await cluster.stop();

    const run = spans.find((s) => s.name === 'run' && s.attributes['duel.run_id'] === 'traced')!;
    expect(run, `spans from ${[...new Set(spans.map((s) => s.service))].join(', ')}`).toBeDefined();
    const top = spans.find((s) => s.name === 'duel run' && s.traceId === run.traceId)!;
    expect(top.parentSpanId).toBe('');
    const trace = spans.filter((s) => s.traceId === top.traceId);
    const byId = new Map(trace.map((s) => [s.spanId, s]));
    const parent = (s: Received) => byId.get(s.parentSpanId);
    const chain = (s: Received) => {
      const out = [`${s.service} ${s.name}`];
      for (let p = parent(s); p; p = parent(p)) out.push(`${p.service} ${p.name}`);
      return out;
    };

    // duel run → CreateRun (client, then server) → the run → its rounds → their stages.
    expect(chain(run)).toEqual([
      'duel-orchestrator run',
      'duel-orchestrator /duel.v1.RunsService/CreateRun',
      'duel-cli CreateRun',
      'duel-cli duel run',
    ]);
    const rounds = trace.filter((s) => s.name === 'round' && s.parentSpanId === run.spanId);
    expect(rounds.map((r) => r.attributes['duel.round']).sort()).toEqual([1, 2]);
    for (const r of rounds)
      expect(trace.filter((s) => s.parentSpanId === r.spanId).map((s) => s.name)).toEqual(ROUND_STAGES);
    const overlapped = spans.find((s) => s.name === 'run' && s.attributes['duel.run_id'] === 'overlapped')!;
    const overlappedRounds = spans.filter((s) => s.name === 'round' && s.parentSpanId === overlapped.spanId);
    expect(overlappedRounds.map((r) => r.attributes['duel.round']).sort()).toEqual([1, 2]);
    for (const r of overlappedRounds)
      expect(
        spans
          .filter((s) => s.parentSpanId === r.spanId)
          .map((s) => s.name)
          .sort(),
      ).toEqual([...ROUND_STAGES].sort());

    // Driven twice, before and after the restart: two run spans in the creator's trace, every
    // round under one of them.
    const resumedRuns = spans.filter((s) => s.name === 'run' && s.attributes['duel.run_id'] === 'resumed');
    expect(resumedRuns).toHaveLength(2);
    const created = spans.find((s) => s.spanId === resumedRuns[0]!.parentSpanId)!;
    expect(created.name).toBe('/duel.v1.RunsService/CreateRun');
    expect(resumedRuns[1]!.parentSpanId).toBe(created.spanId);
    expect(resumedRuns[1]!.traceId).toBe(created.traceId);
    const resumedRounds = spans.filter(
      (s) => s.name === 'round' && resumedRuns.some((r) => r.spanId === s.parentSpanId),
    );
    expect(new Set(resumedRounds.map((r) => r.attributes['duel.round']))).toEqual(new Set([1, 2, 3]));

    // Each shard: a CLIENT span in the stage naming the replica, the SERVER span on that replica.
    for (const [service, method] of [
      ['duel-sampler', '/duel.v1.PolicySamplerService/Sample'],
      ['duel-scorer', '/duel.v1.PreferenceScorerService/Compare'],
      ['duel-trainer', '/duel.v1.TrainerService/TrainRound'],
    ] as const) {
      const served = trace.filter((s) => s.service === service && s.name === method);
      expect(served.length, `${service} ${method}`).toBeGreaterThanOrEqual(2);
      for (const s of served) {
        const call = parent(s)!;
        expect(call.service).toBe('duel-orchestrator');
        expect(call.kind).toBe(3); // CLIENT
        expect(String(call.attributes['server.address'])).toMatch(/127\.0\.0\.1:\d+/);
        expect(parent(call)!.name).toMatch(/^stage /);
      }
    }
    // The trainer's steps are events on its TrainRound span.
    const trained = trace.find((s) => s.name === '/duel.v1.TrainerService/TrainRound')!;
    expect(trained.events.filter((e) => e.name === 'step').length).toBeGreaterThan(0);
    expect(trained.events[0]!.attributes).toHaveProperty('loss');

    // A log line written inside a span carries its ids.
    const published = readFileSync(join(root, 'logs', 'trainer.log'), 'utf8')
      .split('\n')
      .filter((l) => l.includes('"msg":"round published"') && l.includes('"run":"traced"'))
      .map((l) => JSON.parse(l) as { trace_id?: string; span_id?: string });
    expect(published).toHaveLength(2);
    for (const l of published) {
      expect(l.trace_id).toBe(top.traceId);
      expect(byId.get(l.span_id!)?.name).toBe('/duel.v1.TrainerService/TrainRound');
    }
  }, 180_000);
});
