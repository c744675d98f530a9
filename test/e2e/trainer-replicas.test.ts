/**
 * Training sessions across trainer replicas, as real processes over a real nats-server: two
 * `duel serve trainer`, eight LoRA sessions created four on each, every call sent round-robin to
 * either replica (so half are forwarded to the session's owner), and one replica SIGKILLed while
 * calls are in flight. The survivor takes the dead replica's sessions over from their journals and
 * snapshots; every session ends with exactly the adapter of an undisturbed run, which it would not
 * if any call had been applied twice or lost.
 */
import { once } from 'node:events';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TrainingClient, type TrainingSessionHandle } from '../../src/client/training.js';
import type { ModelRef } from '../../src/gen/duel/v1/common.js';
import { readAdapterDir } from '../../src/models/lora/adapter.js';
import { saveModelDir } from '../../src/models/model-dir.js';
import { FileArtifactStore } from '../../src/platform/artifacts.js';
import { freePort, NatsServer } from '../../src/platform/nats-server.js';
import { ROUND_CONFIG } from '../helpers/round-fixtures.js';
import { PLAN, planStep, SESSION_BASE_WEIGHTS, SESSION_OPTIMIZER } from '../helpers/session-plan.js';
import { fileTempDir } from '../helpers/tmp.js';
import { startTrainerProcess } from '../helpers/trainer-process.js';

const root = fileTempDir('duel-trainer-replicas-');
const store = new FileArtifactStore(join(root, 'store'));
const LEASE_MS = 1500;
const LORA = { rank: 2, alpha: 4, targets: ['q_proj', 'v_proj', 'down_proj'], rslora: false };
const SESSIONS = 8;
let nats: NatsServer;
let base: ModelRef;

const startTrainer = async (id: string) =>
  startTrainerProcess(await freePort(), {
    DUEL_NATS_URL: nats.url,
    DUEL_ARTIFACTS_ROOT: store.root,
    DUEL_TRAINER_ID: id,
    DUEL_TRAINER_LEASE_MS: String(LEASE_MS),
    DUEL_TRAINER_SESSIONS_SNAPSHOT_EVERY: '2',
  });

beforeAll(async () => {
  nats = await NatsServer.start({ storeDir: join(root, 'nats') });
  saveModelDir(join(root, 'base'), ROUND_CONFIG, SESSION_BASE_WEIGHTS);
  base = { artifact: store.put(join(root, 'base'), 'base'), adapter: undefined, name: 'base' };
});

afterAll(async () => {
  await nats?.stop();
});

const adapterOf = (ref: ModelRef) => readAdapterDir(store.get(ref.adapter!), ROUND_CONFIG).tensors;

describe('training sessions across two trainer replicas', () => {
  it('survive one replica SIGKILLed mid-call: taken over from the journal, the weights of an undisturbed run', async () => {
    const a = await startTrainer('trainer-a');
    const b = await startTrainer('trainer-b');
    const onA = new TrainingClient(a.address, { retryWithinMs: 60_000 });
    const onB = new TrainingClient(b.address, { retryWithinMs: 60_000 });
    const both = new TrainingClient([a.address, b.address], { retryWithinMs: 60_000 });
    try {
      const create = (c: TrainingClient, k: number, token: string) =>
        c.createSession({ base, optimizer: SESSION_OPTIMIZER, seed: k, lora: LORA, clientToken: token });
      const made = await Promise.all(
        Array.from({ length: SESSIONS }, (_, k) => create(k % 2 ? onB : onA, k, `replicas-${k}`)),
      );
      // Every later call goes round-robin over both replicas.
      const sessions: TrainingSessionHandle[] = await Promise.all(made.map((s) => both.attach(s.id)));
      const owned = { a: made.filter((_, k) => k % 2 === 0).map((s) => s.id) };
      const cut = 7;
      await Promise.all(
        sessions.map(async (s) => {
          for (let i = 0; i < cut; i++) await planStep(s, i);
        }),
      );
      // Half of those calls reached the replica that does not own the session and were forwarded:
      // nobody took anything over while both lived.
      const owners = async () =>
        Object.fromEntries((await both.listSessions()).map((x) => [x.sessionId, x.owner]));
      expect(await owners()).toEqual(
        Object.fromEntries(made.map((s, k) => [s.id, k % 2 ? 'trainer-b' : 'trainer-a'])),
      );

      // Calls in flight when trainer-a dies: the client retries them, trainer-b takes over a's sessions.
      const rest = Promise.all(
        sessions.map(async (s) => {
          for (let i = cut; i < PLAN; i++) await planStep(s, i);
        }),
      );
      await new Promise((r) => setTimeout(r, 30));
      a.kill('SIGKILL');
      await once(a, 'exit');
      await rest;
      const disturbed = await Promise.all(sessions.map((s, k) => s.saveWeights(`disturbed-${k}`)));
      for (const s of sessions) {
        const info = (await both.listSessions()).find((x) => x.sessionId === s.id)!;
        expect(info.seq).toBe(PLAN + 1);
        expect(info.step).toBe(PLAN / 3);
      }
      expect(Object.values(await owners())).toEqual(Array(SESSIONS).fill('trainer-b'));
      const takeovers = [
        ...b.log.matchAll(/"session":"([^"]+)","from":"trainer-a".*took over a training session/g),
      ];
      expect(new Set(takeovers.map((m) => m[1]))).toEqual(new Set(owned.a));

      // The same sessions undisturbed, on trainer-b alone.
      const undisturbed = await Promise.all(
        Array.from({ length: SESSIONS }, async (_, k) => {
          const s = await create(onB, k, `undisturbed-${k}`);
          for (let i = 0; i < PLAN; i++) await planStep(s, i);
          return s.saveWeights(`undisturbed-${k}`);
        }),
      );
      for (let k = 0; k < SESSIONS; k++) {
        const got = adapterOf(disturbed[k]!);
        const want = adapterOf(undisturbed[k]!);
        expect(Object.keys(got).sort()).toEqual(Object.keys(want).sort());
        for (const name of Object.keys(want))
          expect(Array.from(got[name]!.data), `session ${k}: ${name}`).toEqual(Array.from(want[name]!.data));
      }
      // Different seeds: eight different adapters, not one eight times.
      expect(adapterOf(undisturbed[0]!)).not.toEqual(adapterOf(undisturbed[1]!));
    } finally {
      for (const c of [onA, onB, both]) c.close();
      if (a.exitCode === null) a.kill('SIGKILL');
      b.kill('SIGTERM');
      await once(b, 'exit');
    }
  });

  it('a replica paused past its lease (SIGSTOP) serves nothing stale: its session moved, its calls go there', async () => {
    const c = await startTrainer('trainer-c');
    const d = await startTrainer('trainer-d');
    const onC = new TrainingClient(c.address, { retryWithinMs: 60_000 });
    const onD = new TrainingClient(d.address, { retryWithinMs: 60_000 });
    try {
      const create = (cl: TrainingClient, token: string) =>
        cl.createSession({ base, optimizer: SESSION_OPTIMIZER, seed: 3, lora: LORA, clientToken: token });
      const s = await create(onC, 'paused');
      for (let i = 0; i < 4; i++) await planStep(s, i);
      c.kill('SIGSTOP');
      // trainer-d sees trainer-c's lease stop for LEASE_MS, takes the session and goes on with it.
      const viaD = await onD.attach(s.id);
      for (let i = 4; i < 10; i++) await planStep(viaD, i);
      c.kill('SIGCONT');
      // trainer-c still holds the session at seq 4 in memory: the next calls reach it first.
      s.seq = viaD.seq;
      for (let i = 10; i < PLAN; i++) await planStep(s, i);
      const paused = await s.saveWeights('paused');
      expect((await onC.listSessions()).find((x) => x.sessionId === s.id)?.owner).toBe('trainer-d');

      const fresh = await create(onD, 'not-paused');
      for (let i = 0; i < PLAN; i++) await planStep(fresh, i);
      const want = adapterOf(await fresh.saveWeights('not-paused'));
      const got = adapterOf(paused);
      for (const name of Object.keys(want))
        expect(Array.from(got[name]!.data), name).toEqual(Array.from(want[name]!.data));
    } finally {
      onC.close();
      onD.close();
      c.kill('SIGCONT');
      for (const t of [c, d]) {
        t.kill('SIGTERM');
        await once(t, 'exit');
      }
    }
  });
});
