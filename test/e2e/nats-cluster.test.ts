/**
 * The suite on a three-server NATS cluster, as processes: every service connected to all three
 * (`nats.url`), `nats.replicas` 3. A run and a training session go on while the server that leads
 * the run stream and the run records is SIGKILLed, and stays down until both are done; started
 * again, it rejoins. The run ends with the checkpoints of an undisturbed run and every stage's
 * event once; the session with the weights of an undisturbed one.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '../../src/client/local-cluster.js';
import { submitRun } from '../../src/client/runs.js';
import { TrainingClient } from '../../src/client/training.js';
import type { ModelRef } from '../../src/gen/duel/v1/common.js';
import { Run, RunState } from '../../src/gen/duel/v1/runs.js';
import { saveModelDir } from '../../src/models/model-dir.js';
import { FileArtifactStore } from '../../src/platform/artifacts.js';
import { bucketStream, connectNats, type NatsConnection } from '../../src/platform/nats.js';
import { type NatsCluster, NatsServer } from '../../src/platform/nats-server.js';
import { readRunSpec } from '../../src/platform/run-spec.js';
import { ROUND_CONFIG } from '../helpers/round-fixtures.js';
import { eventsUntilEnd } from '../helpers/run-events.js';
import { PLAN, planStep, SESSION_BASE_WEIGHTS, SESSION_OPTIMIZER } from '../helpers/session-plan.js';
import { writeTinyRun, writeTinySpec } from '../helpers/tiny-run.js';
import { fileTempDir } from '../helpers/tmp.js';

const ROUNDS = 3;
const root = fileTempDir('duel-nats-cluster-');
let nats: NatsCluster;
let cluster: LocalCluster;
let nc: NatsConnection;
let base: ModelRef;

beforeAll(async () => {
  writeTinyRun(root);
  nats = await NatsServer.cluster(3);
  cluster = await LocalCluster.start({
    natsUrl: nats.url,
    artifactsRoot: join(root, 'artifacts'),
    logDir: join(root, 'logs'),
    env: { DUEL_NATS_REPLICAS: '3', DUEL_TRAINER_SESSIONS_SNAPSHOT_EVERY: '2' },
  });
  nc = await connectNats({ url: nats.url, replicas: 3 }, 'cluster-test');
  const store = new FileArtifactStore(join(root, 'artifacts'));
  saveModelDir(join(root, 'session-base'), ROUND_CONFIG, SESSION_BASE_WEIGHTS);
  base = {
    artifact: store.put(join(root, 'session-base'), 'session-base'),
    adapter: undefined,
    name: 'base',
  };
}, 180_000);

afterAll(async () => {
  await nc?.close();
  await cluster?.stop();
  await nats?.stop();
});

async function record(id: string): Promise<Run> {
  return Run.decode((await (await nc.jetstream().views.kv('duel_runs')).get(id))!.value);
}

const checkpoints = async (id: string) =>
  (await record(id)).rounds.map((r) =>
    createHash('sha256')
      .update(readFileSync(join(fileURLToPath(r.checkpoint!.artifact!.uri), 'model.safetensors')))
      .digest('hex'),
  );

const subjects = (id: string) => [
  `duel.run.${id}.created`,
  ...Array.from({ length: ROUNDS }, (_, r) =>
    ['started', 'sampled', 'scored', 'trained', 'evaluated', 'completed'].map(
      (s) => `duel.run.${id}.round.${r + 1}.${s}`,
    ),
  ).flat(),
  `duel.run.${id}.finished`,
];

async function run(id: string, onEvent: (subject: string) => unknown = () => {}) {
  const seen = eventsUntilEnd(nc, id, onEvent);
  await submitRun(cluster.orchestrator.address, readRunSpec(writeTinySpec(root, id, { rounds: ROUNDS })), {
    id,
    detach: true,
    log: () => {},
  });
  return (await seen).map((s) => s.subject);
}

/**
 * The server leading `stream`, by its name in the cluster. Asked again while the cluster answers
 * with a timeout (an election under way, or a loaded machine), for up to 30 s.
 */
async function leaderOf(stream: string): Promise<string> {
  for (const until = Date.now() + 30_000; ; ) {
    try {
      return (await (await nc.jetstreamManager()).streams.info(stream)).cluster!.leader!;
    } catch (e) {
      if ((e as { code?: string }).code !== 'TIMEOUT' || Date.now() > until) throw e;
    }
  }
}

describe('the suite on a three-server NATS cluster (R3)', () => {
  it('keeps every stream and bucket in three copies', async () => {
    const jsm = await nc.jetstreamManager();
    for (const stream of ['DUEL_RUNS', 'DUEL_CTL', 'KV_duel_runs'])
      expect((await jsm.streams.info(stream)).config.num_replicas, stream).toBe(3);
    // What a read stuck behind a write reports (CasStore's UNAVAILABLE): the leader and both replicas.
    expect(await (await bucketStream(nc, 'duel_runs')).describe()).toMatch(
      /^KV_duel_runs: leader n[1-3], last sequence \d+, replicas n[1-3] current lag 0, n[1-3] current lag 0$/,
    );
  });

  it('loses nothing when the leader of the run stream and run records dies mid-run and stays down', async () => {
    expect(await run('calm')).toEqual(subjects('calm'));
    const calm = await checkpoints('calm');

    // One server leads both: the run records' leader steps down until the run stream's has it
    // (each stepdown elects one of the other two at random; the next waits for that election).
    const leader = await leaderOf('DUEL_RUNS');
    for (let i = 0; i < 40; i++) {
      const was = await leaderOf('KV_duel_runs').catch(() => '');
      if (was === leader) break;
      await nc
        .request('$JS.API.STREAM.LEADER.STEPDOWN.KV_duel_runs', undefined, { timeout: 5000 })
        .catch(() => {});
      for (
        const until = Date.now() + 5000;
        Date.now() < until;
        await new Promise((r) => setTimeout(r, 100))
      ) {
        const now = await leaderOf('KV_duel_runs').catch(() => '');
        if (now && now !== was) break;
      }
    }
    expect(await leaderOf('KV_duel_runs')).toBe(leader);

    // A training session under way on the same cluster (its journal: two more KV buckets).
    const client = new TrainingClient(cluster.trainer.address, { retryWithinMs: 60_000 });
    const s = await client.createSession({ base, optimizer: SESSION_OPTIMIZER, clientToken: 'storm' });
    for (let i = 0; i < 7; i++) await planStep(s, i);

    let crashed: Promise<number> | undefined;
    const seen = await run('storm', (subject) => {
      if (subject.endsWith('.round.1.scored') && !crashed) {
        const t0 = performance.now();
        crashed = nats
          .byName(leader)
          .crash()
          .then(async () => {
            // The session goes on too, through the same outage.
            for (let i = 7; i < PLAN; i++) await planStep(s, i);
            return performance.now() - t0;
          });
      }
    });
    await crashed;
    expect(seen).toEqual(subjects('storm'));
    expect((await record('storm')).state).toBe(RunState.RUN_STATE_SUCCEEDED);
    expect(await checkpoints('storm')).toEqual(calm);
    expect(await leaderOf('DUEL_RUNS')).not.toBe(leader);

    const stormed = await s.saveWeights('storm');
    const fresh = await client.createSession({ base, optimizer: SESSION_OPTIMIZER });
    for (let i = 0; i < PLAN; i++) await planStep(fresh, i);
    const calmSession = await fresh.saveWeights('calm-session');
    const store = new FileArtifactStore(join(root, 'artifacts'));
    const bytes = (ref: ModelRef) => readFileSync(join(store.get(ref.artifact!), 'model.safetensors'));
    expect(bytes(stormed).equals(bytes(calmSession))).toBe(true);
    client.close();

    // Started again, it catches up and serves as a replica of both.
    await nats.byName(leader).revive();
    const jsm = await nc.jetstreamManager();
    for (const until = Date.now() + 30_000; ; await new Promise((r) => setTimeout(r, 250))) {
      const current = await Promise.all(
        ['DUEL_RUNS', 'KV_duel_runs'].map(async (name) =>
          ((await jsm.streams.info(name)).cluster!.replicas ?? []).some(
            (r) => r.name === leader && r.current,
          ),
        ),
      );
      if (current.every(Boolean)) break;
      if (Date.now() > until) expect(current).toEqual([true, true]);
    }
  }, 240_000);
});
