/**
 * A 2-round run through the four services, every one of them on the webgpu provider
 * (DUEL_RUNTIME_PROVIDER=webgpu: lavapipe on a machine without a GPU). The same spec as
 * test/e2e/run.test.ts's; what it checks here is that every graph of a round runs on the device
 * and the run ends the way it does on cpu.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { LocalCluster } from '../../src/client/local-cluster.js';
import { submitRun } from '../../src/client/runs.js';
import { RunState } from '../../src/gen/duel/v1/runs.js';
import { readRunSpec } from '../../src/platform/run-spec.js';
import { writeTinyRun, writeTinySpec } from '../helpers/tiny-run.js';

let root: string;
let cluster: LocalCluster;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'duel-webgpu-'));
  writeTinyRun(root);
  cluster = await LocalCluster.start({
    samplers: 1,
    scorers: 1,
    artifactsRoot: join(root, 'artifacts'),
    logDir: join(root, 'logs'),
    env: { DUEL_RUNTIME_PROVIDER: 'webgpu', DUEL_LOG_LEVEL: 'info' },
  });
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

it('runs 2 rounds with every service on webgpu', async () => {
  const run = await submitRun(cluster.orchestrator.address, readRunSpec(writeTinySpec(root, 'gpu')), {
    id: 'gpu',
    log: () => {},
  });
  expect(run.state).toBe(RunState.RUN_STATE_SUCCEEDED);
  expect(run.rounds.map((r) => r.round)).toEqual([1, 2]);
  const winRate = run.rounds[1]!.metrics!.values.win_rate_vs_ref!;
  expect(winRate).toBeGreaterThan(0);
  expect(winRate).toBeLessThan(1);
  // Each service that computes said which adapter it got when it started.
  for (const role of ['sampler-0', 'scorer-0', 'trainer'])
    expect(readFileSync(join(root, 'logs', `${role}.log`), 'utf8')).toMatch(/"msg":"webgpu adapter"/);
}, 300_000);
