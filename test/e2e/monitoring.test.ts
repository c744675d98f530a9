/**
 * The dashboard and alerts query what the services really export: a 2-round run through the
 * suite (nats-server, a sampler, a scorer, the trainer, the orchestrator as processes), then every
 * `duel_*` series that deploy/k8s/monitoring.ts names is read on the /metrics port of some
 * running service.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { monitoredMetrics } from '../../deploy/k8s/monitoring.js';
import { LocalCluster, type Role } from '../../src/client/local-cluster.js';
import { submitRun } from '../../src/client/runs.js';
import { RunState } from '../../src/gen/duel/v1/runs.js';
import { freePort } from '../../src/platform/nats-server.js';
import { readRunSpec } from '../../src/platform/run-spec.js';
import { writeTinyRun, writeTinySpec } from '../helpers/tiny-run.js';

let root: string;
let cluster: LocalCluster;
const ports = {} as Record<Role, number>;
const ROLES: Role[] = ['sampler', 'scorer', 'trainer', 'orchestrator'];

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'duel-monitoring-'));
  writeTinyRun(root);
  for (const r of ROLES) ports[r] = await freePort();
  cluster = await LocalCluster.start({
    samplers: 1,
    scorers: 1,
    artifactsRoot: join(root, 'artifacts'),
    logDir: join(root, 'logs'),
    roleEnv: Object.fromEntries(ROLES.map((r) => [r, { DUEL_METRICS_PORT: String(ports[r]) }])),
  });
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('the dashboard and alerts against running services', () => {
  it('name only series that the services export', async () => {
    const run = await submitRun(cluster.orchestrator.address, readRunSpec(writeTinySpec(root, 'watched')), {
      id: 'watched',
      log: () => {},
    });
    expect(run.state).toBe(RunState.RUN_STATE_SUCCEEDED);
    const text = (
      await Promise.all(ROLES.map(async (r) => (await fetch(`http://127.0.0.1:${ports[r]}/metrics`)).text()))
    ).join('\n');
    const exported = new Set([...text.matchAll(/^(duel_[a-z_]+)[{ ]/gm)].map((m) => m[1]!));
    const wanted = monitoredMetrics();
    expect(wanted.length).toBeGreaterThan(10);
    expect(wanted.filter((m) => !exported.has(m))).toEqual([]);
    // Tracing is off unless an endpoint is configured: no span, so no ids in the logs.
    const logs = ['orchestrator', 'trainer', 'sampler-0'].map((s) =>
      readFileSync(join(root, 'logs', `${s}.log`), 'utf8'),
    );
    for (const l of logs) {
      expect(l).toContain('"msg":"rpc"');
      expect(l).not.toContain('trace_id');
    }
  }, 180_000);
});
