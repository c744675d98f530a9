/**
 * Two orchestrator replicas over one NATS and one set of workers, as processes. Each run has one
 * driver, named by its lease in the run record; SIGKILL that driver mid-run and the other replica
 * takes the run over once the lease goes unrenewed, finishing it with the weights of a run nobody
 * disturbed and every stage's event published once.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCluster, type ServiceProcess } from '../../src/client/local-cluster.js';
import { runSummary, submitRun } from '../../src/client/runs.js';
import { Run, RunState } from '../../src/gen/duel/v1/runs.js';
import { connectNats, type NatsConnection } from '../../src/platform/nats.js';
import { readRunSpec } from '../../src/platform/run-spec.js';
import { eventsUntilEnd } from '../helpers/run-events.js';
import { writeTinyRun, writeTinySpec } from '../helpers/tiny-run.js';
import { fileTempDir } from '../helpers/tmp.js';

const LEASE_MS = 3000;
const root = fileTempDir('duel-replicas-');
let cluster: LocalCluster;
let second: ServiceProcess;
let nc: NatsConnection;

beforeAll(async () => {
  writeTinyRun(root);
  cluster = await LocalCluster.start({
    bus: 'nats',
    artifactsRoot: join(root, 'artifacts'),
    logDir: join(root, 'logs'),
    env: { DUEL_ORCHESTRATOR_LEASE_MS: String(LEASE_MS) },
  });
  second = await cluster.addOrchestrator('orchestrator-b');
  nc = await connectNats(cluster.natsUrl, 'replicas-test');
}, 120_000);

afterAll(async () => {
  await nc?.close();
  await cluster?.stop();
});

async function record(id: string): Promise<Run> {
  const e = await (await nc.jetstream().views.kv('duel_runs')).get(id);
  return Run.decode(e!.value);
}

const weights = async (id: string) =>
  (await record(id)).rounds.map((r) =>
    createHash('sha256')
      .update(readFileSync(join(fileURLToPath(r.checkpoint!.artifact!.uri), 'model.safetensors')))
      .digest('hex'),
  );

describe('orchestrator replicas', () => {
  it('takes over a run whose driver was SIGKILLed: same weights as an undisturbed run, each event once', async () => {
    const spec = (name: string) => readRunSpec(writeTinySpec(root, name, { rounds: 3 }));
    // Undisturbed, through the other replica: either one serves any run's API.
    const calm = await submitRun(second.address, spec('calm'), { id: 'calm', log: () => {} });
    expect(calm.state).toBe(RunState.RUN_STATE_SUCCEEDED);
    expect((await record('calm')).lease!.holder).toBe('orchestrator-b');

    const seen: { subject: string; at: number }[] = [];
    let killedAt = 0;
    let victim = '';
    const done = eventsUntilEnd(nc, 'failover', async (subject) => {
      seen.push({ subject, at: Date.now() });
      if (subject.endsWith('.round.1.trained') && !killedAt) {
        victim = (await record('failover')).lease!.holder;
        killedAt = Date.now();
        await (victim === 'orchestrator' ? cluster.orchestrator : second).stop('SIGKILL');
      }
    });
    await submitRun(cluster.orchestrator.address, spec('failover'), {
      id: 'failover',
      detach: true,
      log: () => {},
    });
    await done;

    const run = await record('failover');
    expect(run.state).toBe(RunState.RUN_STATE_SUCCEEDED);
    const survivor = victim === 'orchestrator' ? 'orchestrator-b' : 'orchestrator';
    expect(run.lease!.holder).toBe(survivor);
    // What `duel runs get|list` print names the driver.
    expect(runSummary(run)).toMatchObject({ state: 'succeeded', driver: survivor });
    const subjects = seen.map((s) => s.subject);
    expect(new Set(subjects).size).toBe(subjects.length);
    expect(subjects.filter((s) => s.includes('.round.')).length).toBe(3 * 6);
    expect(await weights('failover')).toEqual(await weights('calm'));
    // The run went on within the lease and a scan of it (one event may have left before the kill).
    const gap = Math.max(...seen.slice(1).map((s, i) => s.at - seen[i]!.at));
    expect(gap).toBeLessThan(LEASE_MS * 3);
    const log = readFileSync(join(root, 'logs', `${survivor}.log`), 'utf8');
    expect(log).toMatch(new RegExp(`"run":"failover","from":"${victim}","msg":"took over a run`));
  }, 180_000);
});
