/**
 * A trainer killed with SIGKILL and started again (as Kubernetes restarts a pod), as real
 * processes over a real nats-server: the client's retry of its last call, sent while no trainer
 * listens, gets the answer the dead trainer gave, and the session ends with the weights of one on
 * the same trainer that was never interrupted. Killed again while it writes a snapshot (in the
 * background, between two steps): the half-written snapshot is never read, and the session ends
 * the same.
 */
import { once } from 'node:events';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TrainingClient } from '../../src/client/training.js';
import type { ModelRef } from '../../src/gen/duel/v1/common.js';
import { loadModelDir, saveModelDir } from '../../src/models/model-dir.js';
import { FileArtifactStore } from '../../src/platform/artifacts.js';
import { freePort, NatsServer } from '../../src/platform/nats-server.js';
import { ROUND_CONFIG } from '../helpers/round-fixtures.js';
import { PLAN, planStep, SESSION_BASE_WEIGHTS, SESSION_OPTIMIZER } from '../helpers/session-plan.js';
import { fileTempDir } from '../helpers/tmp.js';
import { startTrainerProcess, type TrainerProcess } from '../helpers/trainer-process.js';

const root = fileTempDir('duel-kill-');
const store = new FileArtifactStore(join(root, 'store'));
let nats: NatsServer;
let base: ModelRef;
let port: number;

type Trainer = TrainerProcess;

/** `duel serve trainer` on the test's port, resolved once it listens. */
const startTrainer = (env: NodeJS.ProcessEnv = {}): Promise<Trainer> =>
  startTrainerProcess(port, {
    DUEL_NATS_URL: nats.url,
    DUEL_ARTIFACTS_ROOT: store.root,
    // A container restarted in its pod keeps the pod's name, its trainer.id: it takes its
    // sessions back at once instead of waiting out its old lease.
    DUEL_TRAINER_ID: 'trainer-0',
    DUEL_TRAINER_SESSIONS_SNAPSHOT_EVERY: '2',
    ...env,
  });

/** Resolves once the trainer's log matches `re`; fails the test after 10 s. */
async function logged(t: Trainer, re: RegExp): Promise<void> {
  for (const start = Date.now(); !re.test(t.log); await new Promise((r) => setTimeout(r, 50)))
    if (Date.now() - start > 30_000) expect(t.log).toMatch(re);
}

beforeAll(async () => {
  nats = await NatsServer.start({ storeDir: join(root, 'nats') });
  port = await freePort();
  saveModelDir(join(root, 'base'), ROUND_CONFIG, SESSION_BASE_WEIGHTS);
  base = { artifact: store.put(join(root, 'base'), 'base'), adapter: undefined, name: 'base' };
});

afterAll(async () => {
  await nats?.stop();
});

describe('a training session through a SIGKILLed trainer', () => {
  it('is restored by the next trainer: the retry gets the journaled answer, the weights match an uninterrupted session', async () => {
    let trainer = await startTrainer();
    const client = new TrainingClient(`127.0.0.1:${port}`, { retryWithinMs: 60_000 });
    try {
      const s = await client.createSession({ base, optimizer: SESSION_OPTIMIZER, clientToken: 'killed' });
      const cut = 10;
      let answer: unknown;
      for (let i = 0; i < cut; i++) answer = await planStep(s, i);

      // Snapshots are written off the call path: the one at seq 6 (optimizer step 2) is read after
      // step 3 (seq 9) and written while call 10 runs.
      await logged(trainer, /"seq":6,.*training session snapshot written/);
      trainer.kill('SIGKILL');
      await once(trainer, 'exit');
      // The reply to call `cut` was "lost": the client sends it again while nothing listens.
      s.seq = cut - 1;
      const retried = planStep(s, cut - 1);
      trainer = await startTrainer();
      expect(await retried).toEqual(answer);
      // From the snapshot at seq 6 (optimizer step 2; one every 2 steps), replaying calls 7…10. The
      // log line is written before the answer but reaches this process through a pipe: wait for it.
      await logged(trainer, /"seq":10,"replayed":4,.*training session restored/);
      for (let i = cut; i < PLAN; i++) await planStep(s, i);
      const resumed = await s.saveWeights('killed');

      const fresh = await client.createSession({ base, optimizer: SESSION_OPTIMIZER });
      for (let i = 0; i < PLAN; i++) await planStep(fresh, i);
      const uninterrupted = await fresh.saveWeights('uninterrupted');

      const wa = loadModelDir(store.get(resumed.artifact!)).weights;
      const wb = loadModelDir(store.get(uninterrupted.artifact!)).weights;
      for (const k of Object.keys(wb)) expect(Array.from(wa[k]!.data), k).toEqual(Array.from(wb![k]!.data));
      expect((await client.listSessions()).map((x) => x.sessionId).sort()).toEqual([s.id, fresh.id].sort());
    } finally {
      client.close();
      trainer.kill('SIGTERM');
      await once(trainer, 'exit');
    }
  });

  it('killed while writing a snapshot: restored without it, the weights of an uninterrupted session', async () => {
    let trainer = await startTrainer({ DUEL_CRASH_AT: 'trainer.snapshot.writing' });
    const client = new TrainingClient(`127.0.0.1:${port}`, { retryWithinMs: 60_000 });
    try {
      const s = await client.createSession({
        base,
        optimizer: SESSION_OPTIMIZER,
        clientToken: 'killed-writing',
      });
      const exited = once(trainer, 'exit');
      // The calls go on while the trainer dies and comes back: the one in flight is retried.
      const loop = (async () => {
        for (let i = 0; i < PLAN; i++) await planStep(s, i);
      })();
      await exited;
      expect(trainer.log).toContain('crash point trainer.snapshot.writing: SIGKILL');
      trainer = await startTrainer();
      await loop;
      // The snapshot it died writing was never named by the record: restored from the start.
      await logged(trainer, /"seq":(\d+),"replayed":\1,.*training session restored/);
      const resumed = await s.saveWeights('killed-writing');

      const fresh = await client.createSession({ base, optimizer: SESSION_OPTIMIZER });
      for (let i = 0; i < PLAN; i++) await planStep(fresh, i);
      const uninterrupted = await fresh.saveWeights('uninterrupted-writing');
      const wa = loadModelDir(store.get(resumed.artifact!)).weights;
      const wb = loadModelDir(store.get(uninterrupted.artifact!)).weights;
      for (const k of Object.keys(wb)) expect(Array.from(wa[k]!.data), k).toEqual(Array.from(wb![k]!.data));
      // The next trainer's own snapshots are written and adopted.
      await logged(trainer, /training session snapshot written/);
    } finally {
      client.close();
      trainer.kill('SIGTERM');
      await once(trainer, 'exit');
    }
  });
});
