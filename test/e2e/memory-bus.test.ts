/**
 * A run on a machine without nats-server: the suite as separate processes, the orchestrator's
 * events and records on its in-process bus. Clients see the same event sequence through WatchRun
 * as they would through JetStream; what the in-process bus does not give (restart safety) is
 * refused or said, not faked.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '../../src/client/local-cluster.js';
import { followRun, runsClient, submitRun } from '../../src/client/runs.js';
import { EventKind } from '../../src/gen/duel/v1/events.js';
import { RunState } from '../../src/gen/duel/v1/runs.js';
import { readRunSpec } from '../../src/platform/run-spec.js';
import { writeTinyRun, writeTinySpec } from '../helpers/tiny-run.js';

let root: string;
let cluster: LocalCluster;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'duel-memory-bus-'));
  writeTinyRun(root);
  cluster = await LocalCluster.start({
    artifactsRoot: join(root, 'artifacts'),
    logDir: join(root, 'logs'),
    bus: 'memory',
  });
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('the in-process bus', () => {
  it('carries a 2-round run: every stage event once and in order, replayed to a late watcher', async () => {
    expect(cluster.bus).toBe('memory');
    expect(cluster.nats).toBeUndefined();
    // η on a schedule: each round's trainer gets its own value, recorded in the checkpoint; with
    // reference_update_every 1, round 2 regularises toward round 1's checkpoint.
    const spec = writeTinySpec(root, 'mem', {
      algorithm: 'inpo',
      hyperparameters: { k: 3, eta: '2,0.5', tau: 0.1 },
      reference_update_every: 1,
    });
    const run = await submitRun(cluster.orchestrator.address, readRunSpec(spec), {
      id: 'mem',
      log: () => {},
    });
    expect(run.state).toBe(RunState.RUN_STATE_SUCCEEDED);
    expect(run.rounds).toHaveLength(2);
    const trainedWith = run.rounds.map((r) =>
      JSON.parse(readFileSync(join(fileURLToPath(r.checkpoint!.artifact!.uri), 'training.json'), 'utf8')),
    );
    expect(trainedWith.map((t) => t.hyperparameters)).toEqual([
      { k: '3', eta: '2', tau: '0.1' },
      { k: '3', eta: '0.5', tau: '0.1' },
    ]);
    expect(trainedWith[0].reference.sha256).toBe(run.spec!.reference!.artifact!.sha256);
    expect(trainedWith[1].reference).toEqual(run.rounds[0]!.checkpoint!.artifact);

    // A watcher that arrives after the run ended gets the whole history from the start.
    const kinds: string[] = [];
    const c = runsClient(cluster.orchestrator.address);
    try {
      await followRun(c, 'mem', true, (e) => kinds.push(`${e.round}:${EventKind[e.kind]}`));
    } finally {
      c.close();
    }
    const stages = ['STARTED', 'SAMPLED', 'SCORED', 'TRAINED', 'EVALUATED', 'COMPLETED'];
    expect(kinds).toEqual([
      '0:EVENT_KIND_RUN_CREATED',
      ...[1, 2].flatMap((r) => stages.map((s) => `${r}:EVENT_KIND_ROUND_${s}`)),
      '0:EVENT_KIND_RUN_FINISHED',
    ]);
    expect(readFileSync(join(root, 'logs', 'orchestrator.log'), 'utf8')).toMatch(
      /in-process bus.*a restart loses every run/,
    );
  });
});
