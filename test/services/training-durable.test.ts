/**
 * Durable training sessions in one process, over real gRPC on loopback through the TypeScript
 * client: a trainer that loses its memory (a restart) restores each session from the journal and
 * the last snapshot, answers the retried call as before, and ends with the weights of a session
 * that was never interrupted; SaveState + LoadState resume anywhere, pending gradients included;
 * ComputeLogprobs reads the current weights.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TrainerCore } from '../../services/trainer/service.js';
import { memoryJournal, type SessionJournal } from '../../services/trainer/session-journal.js';
import { TrainingSessions } from '../../services/trainer/sessions.js';
import { trainingService } from '../../services/trainer/training-service.js';
import { TrainingClient } from '../../src/client/training.js';
import { Runtime } from '../../src/engine/index.js';
import { Code, DuelError } from '../../src/errors.js';
import type { ModelRef } from '../../src/gen/duel/v1/common.js';
import { readAdapterDir } from '../../src/models/lora/adapter.js';
import { loadModelDir, saveModelDir } from '../../src/models/model-dir.js';
import { FileArtifactStore } from '../../src/platform/artifacts.js';
import { startService } from '../helpers/grpc.js';
import { maxRelativeDiff } from '../helpers/model-fixtures.js';
import { ROUND_CONFIG } from '../helpers/round-fixtures.js';
import { BATCHES, PLAN, planStep, SESSION_BASE_WEIGHTS, SESSION_OPTIMIZER } from '../helpers/session-plan.js';
import { fileTempDir } from '../helpers/tmp.js';

const root = fileTempDir('duel-durable-');
const runtime = new Runtime({ workers: 2, intraOpThreads: 1 });
const store = new FileArtifactStore(join(root, 'store'));
let base: ModelRef;

const w0 = SESSION_BASE_WEIGHTS;
const OPTIMIZER = SESSION_OPTIMIZER;

/** A trainer's sessions behind a gRPC server; `stop` drops its memory (the journal stays). */
async function trainer(journal: SessionJournal, snapshotEvery = 2, rt = runtime, lossScaleInit?: number) {
  const training = lossScaleInit ? { lossScale: { init: lossScaleInit } } : {};
  const sessions = new TrainingSessions(
    new TrainerCore(rt, store, undefined, undefined, undefined, training),
    {
      journal: async () => journal,
      snapshotEvery,
    },
  );
  const { server, address } = await startService([trainingService(sessions)]);
  const client = new TrainingClient(address, { retryWithinMs: 0 });
  return {
    sessions,
    client,
    stop: async () => {
      client.close();
      await server.shutdown('restart');
      await sessions.release();
    },
  };
}

const step = planStep;

const weightsOf = async (m: ModelRef) => loadModelDir(await store.get(m.artifact!)).weights;

beforeAll(async () => {
  saveModelDir(join(root, 'base'), ROUND_CONFIG, w0);
  base = { artifact: store.put(join(root, 'base'), 'base'), adapter: undefined, name: 'base' };
});

afterAll(() => runtime.close());

describe('durable training sessions', () => {
  let reference: Record<string, { data: ArrayLike<number> }>;

  beforeAll(async () => {
    const t = await trainer(memoryJournal());
    const s = await t.client.createSession({ base, optimizer: OPTIMIZER });
    for (let i = 0; i < PLAN; i++) await step(s, i);
    reference = await weightsOf(await s.saveWeights('reference'));
    await t.stop();
  });

  it.each([
    ['a snapshot every 2 optimizer steps', memoryJournal(), 2],
    ['calls too big for the journal (a snapshot each)', { ...memoryJournal(), maxCallBytes: 64 }, 100],
  ])(
    'a restarted trainer restores the session (%s): same answer to the retry, same weights',
    async (_, journal, every) => {
      let t = await trainer(journal, every);
      let s = await t.client.createSession({ base, optimizer: OPTIMIZER, clientToken: 'durable' });
      // Stop after a forwardBackward past the last snapshot: the restore replays pending gradients.
      const cut = 10;
      let answer: unknown;
      for (let i = 0; i < cut; i++) answer = await step(s, i);
      await t.stop();

      t = await trainer(journal, every);
      // The same token finds the session; the retried last call gets its answer, applied once.
      s = await t.client.createSession({ base, optimizer: OPTIMIZER, clientToken: 'durable' });
      expect(s.seq).toBe(cut);
      s.seq = cut - 1;
      expect(await step(s, cut - 1)).toEqual(answer);
      for (let i = cut; i < PLAN; i++) await step(s, i);
      const got = await weightsOf(await s.saveWeights(`restored-${every}`));
      for (const [k, t0] of Object.entries(reference))
        expect(Array.from(got[k]!.data), k).toEqual(Array.from(t0.data));

      // The journal holds only what the last snapshot does not cover, and one snapshot is kept.
      const record = (await journal.records.get(s.id))!.value;
      const calls = await journal.calls.keys(`${s.id}.`);
      expect(calls.length).toBe(record.seq - record.snapshotSeq);
      expect(record.snapshotSeq).toBeGreaterThan(0);
      expect(readdirSync(join(store.root, 'sessions', s.id))).toEqual([`snapshot-${record.snapshotSeq}`]);

      await s.close();
      expect(readdirSync(join(store.root, 'sessions', s.id))).toEqual([]);
      expect(await journal.calls.keys(`${s.id}.`)).toEqual([]);
      await t.stop();
    },
  );

  it('a call applied but not committed (the journal failed) is applied once by its retry', async () => {
    const journal = memoryJournal();
    const records = journal.records;
    // The record store refuses the commit of calls 5 and 9 (a forwardBackward and an optimStep):
    // the state holds a call the journal does not.
    const refused = new Set([5, 9]);
    const flaky = {
      ...journal,
      records: {
        ...records,
        get: records.get.bind(records),
        create: records.create.bind(records),
        put: records.put.bind(records),
        delete: records.delete.bind(records),
        keys: records.keys.bind(records),
        update: (key: string, change: Parameters<typeof records.update>[1]) =>
          records.update(key, (cur) => {
            if (refused.delete(cur.seq + 1)) throw DuelError.unavailable('the journal is down');
            return change(cur);
          }),
      },
    };
    const t = await trainer(flaky);
    const s = await t.client.createSession({ base, optimizer: OPTIMIZER });
    for (let i = 0; i < PLAN; i++) {
      const answer = await step(s, i).catch((e: DuelError) => e);
      if (answer instanceof DuelError) {
        expect(answer.code).toBe(Code.UNAVAILABLE);
        await step(s, i); // the client's retry, same seq: the session is restored from the journal first
      }
    }
    expect(refused.size).toBe(0);
    const got = await weightsOf(await s.saveWeights('after-refused-commits'));
    for (const [k, w] of Object.entries(reference))
      expect(Array.from(got[k]!.data), k).toEqual(Array.from(w.data));
    await t.stop();
  });

  it('a float16 trainer trains in mixed precision; a restart restores the loss scale, skipped steps and all', async () => {
    const half = new Runtime({ workers: 2, intraOpThreads: 1, dtype: 'float16' });
    try {
      const run = async (cut?: number) => {
        const journal = memoryJournal();
        let t = await trainer(journal, 2, half, 2 ** 18);
        let s = await t.client.createSession({ base, optimizer: OPTIMIZER, clientToken: 'half' });
        const scales: number[] = [];
        const applied: number[] = [];
        for (let i = 0; i < PLAN; i++) {
          if (i === cut) {
            await t.stop();
            t = await trainer(journal, 2, half, 2 ** 18);
            s = await t.client.createSession({ base, optimizer: OPTIMIZER, clientToken: 'half' });
          }
          const answer = (await step(s, i)) as { metrics?: { values: Record<string, number> } };
          if (i % 3 === 2) {
            scales.push(answer.metrics!.values.loss_scale!);
            applied.push(answer.metrics!.values.applied!);
          }
        }
        const end = await weightsOf(await s.saveWeights(`half-${cut ?? 'whole'}`));
        await s.close();
        await t.stop();
        return { scales, applied, end };
      };
      // GradScaler's rule from 2¹⁸, which overflows this model's gradients in half: each skipped
      // step halves the scale, and the steps at a scale that fits are applied.
      const whole = await run();
      expect(whole.scales[0]).toBe(2 ** 18);
      expect(whole.applied[0]).toBe(0);
      for (let i = 1; i < whole.scales.length; i++)
        expect(whole.scales[i]).toBe(whole.applied[i - 1] ? whole.scales[i - 1] : whole.scales[i - 1]! / 2);
      expect(whole.applied).toContain(1);
      // Stopped before call 13, past the snapshot of the second applied step (call 11): the scale
      // comes back from it (a fresh one would overflow again at call 14).
      const restarted = await run(13);
      expect(restarted.scales).toEqual(whole.scales);
      for (const [k, t0] of Object.entries(whole.end))
        expect(Array.from(restarted.end[k]!.data), k).toEqual(Array.from(t0.data));
      expect(maxRelativeDiff(whole.end, w0)).toBeGreaterThan(1e-4);
    } finally {
      await half.close();
    }
  });

  it('SaveState and LoadState resume anywhere, gradients pending included', async () => {
    const t = await trainer(memoryJournal());
    const a = await t.client.createSession({ base, optimizer: OPTIMIZER });
    for (let i = 0; i < 7; i++) await step(a, i);
    const state = await a.saveState('states/at-7');
    const b = await t.client.loadState(state);
    expect((await b.info()).step).toBe((await a.info()).step);
    for (let i = 7; i < PLAN; i++) {
      await step(a, i);
      await step(b, i);
    }
    const [wa, wb] = [await weightsOf(await a.saveWeights('a')), await weightsOf(await b.saveWeights('b'))];
    for (const k of Object.keys(wa)) expect(Array.from(wb[k]!.data), k).toEqual(Array.from(wa[k]!.data));
    for (const k of Object.keys(wa))
      expect(Array.from(wa[k]!.data), k).toEqual(Array.from(reference[k]!.data));
    await t.stop();
  });

  it('gradient checkpointing is the session’s own: kept across a restart, chosen anew by LoadState, the same weights', async () => {
    const journal = memoryJournal();
    let t = await trainer(journal);
    let s = await t.client.createSession({
      base,
      optimizer: OPTIMIZER,
      clientToken: 'recomputed',
      gradientCheckpointing: true,
    });
    const plain = await t.client.createSession({ base, optimizer: OPTIMIZER });
    expect((await s.info()).gradientCheckpointing).toBe(true);
    expect((await plain.info()).gradientCheckpointing).toBe(false);
    for (let i = 0; i < 5; i++) await step(s, i);
    await t.stop();
    // Restored by a trainer whose default is to keep activations: it still recomputes them.
    t = await trainer(journal);
    s = await t.client.createSession({ base, optimizer: OPTIMIZER, clientToken: 'recomputed' });
    for (let i = 5; i < 7; i++) await step(s, i);
    expect((await s.info()).gradientCheckpointing).toBe(true);
    // A state resumes as the LoadState call asks, else as the trainer's default.
    const state = await s.saveState('states/recomputed');
    expect((await (await t.client.loadState(state)).info()).gradientCheckpointing).toBe(false);
    const loaded = await t.client.loadState(state, '', { gradientCheckpointing: true });
    expect((await loaded.info()).gradientCheckpointing).toBe(true);
    for (let i = 7; i < PLAN; i++) await step(loaded, i);
    const got = await weightsOf(await loaded.saveWeights('recomputed'));
    for (const [k, t0] of Object.entries(reference))
      expect(Array.from(got[k]!.data), k).toEqual(Array.from(t0.data));
    await t.stop();
  });

  it('ComputeLogprobs reads the current weights: its mean is cross_entropy’s loss, before and after a step', async () => {
    const t = await trainer(memoryJournal());
    const s = await t.client.createSession({ base, optimizer: OPTIMIZER });
    const batch = BATCHES[0]!;
    const tokens = batch.reduce((n, d) => n + d.completionIds.length, 0);
    const before = await s.computeLogprobs(batch);
    expect(before.map((l) => l.length)).toEqual(batch.map((d) => d.completionIds.length));
    const { loss } = await s.forwardBackward('cross_entropy', batch);
    expect(-before.flat().reduce((a, b) => a + b, 0) / tokens).toBeCloseTo(loss, 5);
    await s.optimStep();
    const after = await s.computeLogprobs(batch);
    const { loss: next } = await s.forwardBackward('cross_entropy', batch);
    expect(-after.flat().reduce((a, b) => a + b, 0) / tokens).toBeCloseTo(next, 5);
    expect(next).toBeLessThan(loss);
    await t.stop();
  });

  it('refuses a LoadState of something that is not a session state, naming the field', async () => {
    const t = await trainer(memoryJournal());
    const err = await t.client.loadState(base.artifact!).catch((e) => e);
    expect(String(err)).toMatch(/state: is not a training session state/);
    await t.stop();
  });

  it('LoRA sessions share one base in memory; each restores its own adapter after a restart', async () => {
    const journal = memoryJournal();
    const lora = { rank: 2, alpha: 4, targets: ['q_proj', 'v_proj', 'down_proj'], rslora: false };
    const open = (c: TrainingClient, seed: number, clientToken = '') =>
      c.createSession({ base, optimizer: OPTIMIZER, lora, seed, clientToken });
    let t = await trainer(journal);
    const a = await open(t.client, 1, 'lora-a');
    const b = await open(t.client, 2, 'lora-b');
    for (let i = 0; i < 8; i++) {
      await step(a, i);
      await step(b, i + 1);
    }
    expect(t.sessions.loaded).toEqual({ sessions: 2, sharedBases: 1 });
    await t.stop();

    t = await trainer(journal);
    const [a2, b2] = [await open(t.client, 1, 'lora-a'), await open(t.client, 2, 'lora-b')];
    for (let i = 8; i < PLAN; i++) {
      await step(a2, i);
      await step(b2, i + 1);
    }
    expect(t.sessions.loaded).toEqual({ sessions: 2, sharedBases: 1 });
    const saved = await a2.saveWeights('lora-a');
    expect(saved.artifact).toEqual(base.artifact);
    const got = readAdapterDir(store.get(saved.adapter!), ROUND_CONFIG);
    expect(got.config).toMatchObject({ rank: 2, alpha: 4, targets: ['q_proj', 'v_proj', 'down_proj'] });

    const fresh = await open(t.client, 1);
    for (let i = 0; i < PLAN; i++) await step(fresh, i);
    const want = readAdapterDir(store.get((await fresh.saveWeights('lora-fresh')).adapter!), ROUND_CONFIG);
    for (const [k, w] of Object.entries(want.tensors))
      expect(Array.from(got.tensors[k]!.data), k).toEqual(Array.from(w.data));
    const other = readAdapterDir(store.get((await b2.saveWeights('lora-b')).adapter!), ROUND_CONFIG);
    expect(Array.from(other.tensors['model.layers.0.self_attn.q_proj.lora_A.weight']!.data)).not.toEqual(
      Array.from(got.tensors['model.layers.0.self_attn.q_proj.lora_A.weight']!.data),
    );
    for (const s of [a2, b2, fresh]) await s.close();
    expect(t.sessions.loaded).toEqual({ sessions: 0, sharedBases: 0 });
    await t.stop();
  });

  it.each([
    ['full weights', undefined],
    ['LoRA', { rank: 2, alpha: 4, targets: ['q_proj', 'v_proj'], rslora: false }],
  ])(
    'Sample draws from the current weights (%s): its log-probs are ComputeLogprobs’ before and after a step',
    async (_, lora) => {
      const t = await trainer(memoryJournal());
      const s = await t.client.createSession({
        base,
        optimizer: OPTIMIZER,
        seed: 3,
        ...(lora ? { lora } : {}),
      });
      const prompts = [BATCHES[0]![0]!.promptIds, BATCHES[1]![1]!.promptIds];
      for (let round = 0; round < 2; round++) {
        const samples = await s.sample(prompts, { numSamples: 2, maxNewTokens: 4, seed: 5 });
        expect(samples).toHaveLength(4);
        const data = samples.map((x) => ({
          promptIds: prompts[x.promptIndex]!,
          completionIds: x.completion!.tokenIds,
        }));
        const scored = await s.computeLogprobs(data);
        samples.forEach((x, i) => {
          x.completion!.tokenLogprobs.forEach((lp, k) => {
            expect(lp).toBeCloseTo(scored[i]![k]!, 4);
          });
        });
        // A step with the sampled rows as data, so round 2 samples from changed weights.
        await s.forwardBackward(
          'importance_sampling',
          data.map((d, i) => ({
            ...d,
            advantages: d.completionIds.map(() => (i % 2 ? 1 : -1)),
            samplingLogprobs: samples[i]!.completion!.tokenLogprobs,
          })),
        );
        await s.optimStep(0.05);
      }
      await s.close();
      await t.stop();
    },
  );
});
