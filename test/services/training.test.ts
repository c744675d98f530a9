/**
 * TrainingService over real gRPC on loopback: a client's own loop of ForwardBackward and
 * OptimStep calls gives `duel train sft`'s weights, a retried call is answered without applying
 * twice, a wrong seq names the expected one, and SaveWeights publishes a loadable model.
 */
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TrainerCore } from '../../services/trainer/service.js';
import { TrainingSessions } from '../../services/trainer/sessions.js';
import { trainingService } from '../../services/trainer/training-service.js';
import { trainRound } from '../../src/algorithms/train-round.js';
import { TrainingClient } from '../../src/client/training.js';
import { Runtime } from '../../src/engine/index.js';
import { Completion, type ModelRef, OptimizerConfig } from '../../src/gen/duel/v1/common.js';
import { type TrainingDatum, TrainingServiceClient } from '../../src/gen/duel/v1/training.js';
import { loadModelDir, saveModelDir } from '../../src/models/model-dir.js';
import { FileArtifactStore } from '../../src/platform/artifacts.js';
import type { GrpcServer } from '../../src/platform/grpc/server.js';
import { violationsOf } from '../../src/platform/grpc/status-details.js';
import { startService, unary } from '../helpers/grpc.js';
import { maxRelativeDiff, weights } from '../helpers/model-fixtures.js';
import { ROUND_CONFIG, ROUND_RECORDS, ROUND_SEQUENCES } from '../helpers/round-fixtures.js';
import { fileTempDir } from '../helpers/tmp.js';

const root = fileTempDir('duel-training-');
const runtime = new Runtime({ workers: 2, intraOpThreads: 1 });
const store = new FileArtifactStore(join(root, 'store'));
const sessions = new TrainingSessions(new TrainerCore(runtime, store));
let server: GrpcServer;
let client: TrainingServiceClient;
let address: string;
let base: ModelRef;

const w0 = Object.fromEntries(
  Object.entries(weights(ROUND_CONFIG, 2, 'float64', 5)).map(([k, t]) => [
    k,
    { ...t, dtype: 'float32' as const, data: Float32Array.from(t.data) },
  ]),
);
const DATA: TrainingDatum[] = ROUND_SEQUENCES.map((d) => ({
  ...d,
  tokenWeights: [],
  advantages: [],
  samplingLogprobs: [],
  roundRecord: undefined,
}));
const OPTIMIZER = OptimizerConfig.fromPartial({
  name: 'adamw',
  learningRate: 1e-2,
  gradClip: 1,
  weightDecay: 0.01,
});

beforeAll(async () => {
  saveModelDir(join(root, 'base'), ROUND_CONFIG, w0);
  base = { artifact: store.put(join(root, 'base'), 'base'), adapter: undefined, name: 'base' };
  ({ server, address } = await startService([trainingService(sessions)]));
  client = new TrainingServiceClient(address, grpc.credentials.createInsecure());
});

afterAll(async () => {
  client?.close();
  await server?.shutdown('test over');
  await sessions.release();
  await runtime.close();
});

const call = <Req, Res>(method: string, req: Req) =>
  unary<Req, Res>(
    (client as unknown as Record<string, grpc.requestCallback<Res>>)[method]!.bind(client) as never,
    req,
  );
const fail = (p: Promise<unknown>) =>
  p.then(
    () => undefined,
    (e: grpc.ServiceError) => e,
  );

describe('TrainingService', () => {
  it('a client loop of ForwardBackward + OptimStep gives duel train sft’s weights; retries apply nothing twice', async () => {
    const created = await call<object, { sessionId: string }>('createSession', {
      base,
      optimizer: OPTIMIZER,
      clientToken: 'loop-1',
    });
    // The same client token is the same session.
    const again = await call<object, { sessionId: string }>('createSession', {
      base,
      optimizer: OPTIMIZER,
      clientToken: 'loop-1',
    });
    expect(again.sessionId).toBe(created.sessionId);
    const id = created.sessionId;
    let seq = 0;
    for (let i = 0; i < 3; i++) {
      const fb = { sessionId: id, seq: ++seq, loss: 'cross_entropy', lossConfig: {}, data: DATA };
      const first = await call<object, { loss: number }>('forwardBackward', fb);
      // A retry (the reply was lost): the same answer, nothing accumulated twice.
      expect(await call<object, { loss: number }>('forwardBackward', fb)).toEqual(first);
      const step = { sessionId: id, seq: ++seq };
      expect(await call<object, { step: number }>('optimStep', step)).toMatchObject({ step: i + 1 });
      expect(await call<object, { step: number }>('optimStep', step)).toMatchObject({ step: i + 1 });
    }
    // A gap, an old seq, a retry of another call: FAILED_PRECONDITION naming the seq expected.
    for (const s of [seq + 2, seq - 1]) {
      const e = await fail(call('optimStep', { sessionId: id, seq: s }));
      expect(e?.code).toBe(grpc.status.FAILED_PRECONDITION);
      expect(e?.details).toMatch(`expects seq ${seq + 1}`);
    }
    const other = await fail(
      call('forwardBackward', { sessionId: id, seq, loss: 'cross_entropy', lossConfig: {}, data: DATA }),
    );
    expect(other?.details).toMatch(/was a OptimStep call/);

    const saved = await call<object, { model: ModelRef }>('saveWeights', {
      sessionId: id,
      seq: ++seq,
      name: 'sessions/loop-1',
    });
    const got = loadModelDir(await store.get(saved.model.artifact!)).weights;
    const sft = await trainRound(runtime, {
      algo: 'sft',
      hparams: {},
      config: ROUND_CONFIG,
      weights: w0,
      records: ROUND_RECORDS.map((r) => ({ ...r, prefs: [] })),
      optimizer: { kind: 'adamw', weightDecay: 0.01 },
      lr: 1e-2,
      gradClip: 1,
      steps: 3,
      batchSize: ROUND_RECORDS.length,
      seed: 0,
    });
    expect(maxRelativeDiff(got, sft.weights)).toBeLessThan(1e-6);
    expect(await call<object, { session: object }>('getSession', { sessionId: id })).toMatchObject({
      session: { sessionId: id, seq, step: 3 },
    });
    await call('closeSession', { sessionId: id });
    expect((await fail(call('getSession', { sessionId: id })))?.code).toBe(grpc.status.NOT_FOUND);
  });

  it('answers bad requests with INVALID_ARGUMENT naming the fields', async () => {
    const { sessionId } = await call<object, { sessionId: string }>('createSession', {
      base,
      optimizer: OPTIMIZER,
      clientToken: '',
    });
    const e = await fail(
      call('forwardBackward', {
        sessionId,
        seq: 0,
        loss: 'cross_entropy',
        lossConfig: { eps: '1' },
        data: DATA,
      }),
    );
    expect(e?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(violationsOf(e!).map((v) => v.field)).toEqual(['seq', 'loss_config']);
    const unknown = await fail(
      call('forwardBackward', { sessionId, seq: 1, loss: 'grpo', lossConfig: {}, data: DATA }),
    );
    expect(violationsOf(unknown!)).toEqual([
      {
        field: 'loss',
        description: expect.stringMatching(/^must be one of cross_entropy, .*sppo.*, got 'grpo'$/),
      },
    ]);
    const bad = await fail(
      call('forwardBackward', {
        sessionId,
        seq: 1,
        loss: 'ppo',
        lossConfig: {},
        data: [{ ...DATA[0]!, advantages: [1], samplingLogprobs: [0] }],
      }),
    );
    expect(violationsOf(bad!).map((v) => v.field)).toEqual(['data[0].advantages']);
    // Nothing was applied: seq 1 is still the next.
    expect(await call<object, { session: { seq: number } }>('getSession', { sessionId })).toMatchObject({
      session: { seq: 0 },
    });
    await call('closeSession', { sessionId });
  });

  it('trains a pairwise loss by its algorithm name on round records: duel train round’s update', async () => {
    const hparams = { eta: 2, tau: 0.2, inpo_labels: 'sampled' };
    const training = new TrainingClient(address);
    const s = await training.createSession({ base, optimizer: OPTIMIZER, seed: 41 });
    const wire = ROUND_RECORDS.map((r) => ({
      promptIds: r.prompt_ids,
      prompt: '',
      completions: r.completion_ids.map((c) => Completion.fromPartial({ tokenIds: c })),
      prefs: { rows: 3, cols: 3, values: r.prefs.flat() },
      policyVersion: 0,
    }));
    const { loss } = await s.forwardBackwardRecords('inpo', wire, hparams);
    await s.optimStep();
    const got = loadModelDir(await store.get((await s.saveWeights('sessions/inpo')).artifact!)).weights;
    // The session's call 1 draws INPO's sampled labels from seed 41 + 1.
    const round = await trainRound(runtime, {
      algo: 'inpo',
      hparams,
      config: ROUND_CONFIG,
      weights: w0,
      reference: w0,
      records: ROUND_RECORDS,
      optimizer: { kind: 'adamw', weightDecay: 0.01 },
      lr: 1e-2,
      gradClip: 1,
      steps: 1,
      batchSize: ROUND_RECORDS.length,
      seed: 42,
    });
    expect(loss).toBeCloseTo(round.metrics.loss_first, 5);
    let worst = 0;
    for (const [k, t] of Object.entries(round.weights))
      t.data.forEach((v, i) => {
        worst = Math.max(worst, Math.abs(v - got[k]!.data[i]!));
      });
    expect(worst).toBeLessThan(1e-6);

    // A pairwise loss needs records, and names a bad hyper-parameter under loss_config.
    const e = await fail(
      call('forwardBackward', {
        sessionId: s.id,
        seq: s.seq + 1,
        loss: 'inpo',
        lossConfig: { tau: '-1' },
        data: DATA,
      }),
    );
    expect(violationsOf(e!).map((v) => v.field)).toEqual([
      'data[0].round_record',
      'data[1].round_record',
      'data[2].round_record',
      'data[3].round_record',
      'data[4].round_record',
      'data[5].round_record',
      'loss_config.tau',
    ]);
    await s.close();
    training.close();
  });
});
