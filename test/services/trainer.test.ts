/** TrainerService over real gRPC: a client-streamed round in, a verified checkpoint in the store out. */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TrainerCore, trainerService } from '../../services/trainer/service.js';
import { Runtime } from '../../src/engine/index.js';
import type { ModelRef } from '../../src/gen/duel/v1/common.js';
import {
  type ExportCheckpointResponse,
  type GetStatusResponse,
  TrainerServiceClient,
  TrainerState,
  type TrainRoundRequest,
  type TrainRoundResponse,
} from '../../src/gen/duel/v1/trainer.js';
import { initLlamaWeights } from '../../src/models/llama/weights.js';
import { loadModelDir, saveModelDir } from '../../src/models/model-dir.js';
import { FileArtifactStore } from '../../src/platform/artifacts.js';
import type { GrpcServer } from '../../src/platform/grpc/server.js';
import { collect, startService, unary } from '../helpers/grpc.js';
import { tinyLlamaConfig } from '../helpers/model-fixtures.js';
import { fileTempDir } from '../helpers/tmp.js';

const root = fileTempDir('duel-trainer-');
const runtime = new Runtime({ workers: 1, intraOpThreads: 1 });
const store = new FileArtifactStore(join(root, 'store'));
let server: GrpcServer;
let client: TrainerServiceClient;
let policy: ModelRef;

beforeAll(async () => {
  const cfg = tinyLlamaConfig(1);
  saveModelDir(join(root, 'p0'), cfg, initLlamaWeights(cfg, 2));
  policy = { artifact: store.put(join(root, 'p0'), 'run/round-0'), adapter: undefined, name: 'policy' };
  let address: string;
  ({ server, address } = await startService([trainerService(new TrainerCore(runtime, store))]));
  client = new TrainerServiceClient(address, grpc.credentials.createInsecure());
});

afterAll(async () => {
  client?.close();
  await server?.shutdown('test over');
  await runtime.close();
});

function trainRound(messages: TrainRoundRequest[]): Promise<TrainRoundResponse> {
  return new Promise((resolve, reject) => {
    const call = client.trainRound((err, res) => (err ? reject(err) : resolve(res!)));
    for (const m of messages) call.write(m);
    call.end();
  });
}

const completion = (...ids: number[]) => ({
  tokenIds: ids,
  text: '',
  tokenLogprobs: [],
  logprob: 0,
  source: 1,
  finished: true,
});
const record = (prompt: number[], a: number[], b: number[], p: number): TrainRoundRequest => ({
  kind: {
    $case: 'record',
    record: {
      promptIds: prompt,
      prompt: '',
      completions: [completion(...a), completion(...b)],
      prefs: { rows: 2, cols: 2, values: [0.5, p, 1 - p, 0.5] },
      policyVersion: 0,
    },
  },
});
const config = (extra: Record<string, unknown> = {}): TrainRoundRequest => ({
  kind: {
    $case: 'config',
    config: {
      runId: 'run',
      round: 1,
      policyVersion: 0,
      maxStaleness: 0,
      algorithm: 'sppo',
      policy,
      reference: undefined,
      lora: undefined,
      hyperparameters: { eta: '2' },
      optimizer: {
        name: 'adamw',
        learningRate: 1e-2,
        weightDecay: 0,
        gradClip: 1,
        steps: 3,
        epochs: 0,
        batchSize: 2,
        schedule: 'constant',
        warmupSteps: 0,
        momentum: 0,
        beta1: 0,
        beta2: 0,
        epsilon: 0,
      },
      seed: 1,
      outputUri: 'run/round-1',
      ...extra,
    },
  },
});

describe('TrainerService', () => {
  it('trains a streamed round and publishes a checkpoint the store verifies', async () => {
    const res = await trainRound([
      config(),
      record([4, 5], [6], [7, 8], 0.9),
      record([9], [10, 4], [5], 0.2),
    ]);
    expect(res).toMatchObject({ steps: 3, skippedSteps: 0, checkpoint: { runId: 'run', round: 1 } });
    expect(res.metrics!.values.loss_first).toBeGreaterThanOrEqual(0);
    const dir = store.get(res.checkpoint!.artifact!);
    const trained = loadModelDir(dir);
    const before = loadModelDir(store.get(policy.artifact!));
    expect(trained.weights['model.norm.weight']!.data).not.toEqual(before.weights['model.norm.weight']!.data);

    const status = await unary<object, GetStatusResponse>(client.getStatus.bind(client), {});
    expect(status).toMatchObject({
      state: TrainerState.TRAINER_STATE_IDLE,
      runId: 'run',
      round: 1,
      step: 3,
      totalSteps: 3,
    });

    // Export streams every file with its digest; the chunks reassemble to those bytes.
    const chunks: ExportCheckpointResponse[] = await collect(
      client.exportCheckpoint({ checkpoint: res.checkpoint, chunkSize: 1000 }),
    );
    const files = new Map<string, Buffer[]>();
    for (const c of chunks) files.set(c.path, [...(files.get(c.path) ?? []), Buffer.from(c.data)]);
    expect([...files.keys()]).toEqual(
      expect.arrayContaining(['config.json', 'manifest.json', 'metrics.json', 'model.safetensors']),
    );
    for (const [path, parts] of files) {
      const sha = chunks.find((c) => c.path === path)!.sha256;
      expect(createHash('sha256').update(Buffer.concat(parts)).digest('hex')).toBe(sha);
    }
  });

  it('in float16 starts a round at the loss scale the round that made its policy ended with', async () => {
    const half = new Runtime({ workers: 1, intraOpThreads: 1, dtype: 'float16' });
    const started = await startService([trainerService(new TrainerCore(half, store))]);
    const halfClient = new TrainerServiceClient(started.address, grpc.credentials.createInsecure());
    try {
      // A policy written by a float16 round that ended at 2¹⁰, and the run's first (no metrics).
      const cfg = tinyLlamaConfig(1);
      saveModelDir(join(root, 'p1'), cfg, initLlamaWeights(cfg, 2), {
        extraFiles: { 'metrics.json': JSON.stringify({ loss_scale: 1024 }) },
      });
      const fromRound = { ...policy, artifact: store.put(join(root, 'p1'), 'run/round-1-half') };
      const train = (from: ModelRef, outputUri: string) =>
        new Promise<TrainRoundResponse>((resolve, reject) => {
          const call = halfClient.trainRound((err, res) => (err ? reject(err) : resolve(res!)));
          for (const m of [
            config({ policy: from, outputUri }),
            record([4, 5], [6], [7, 8], 0.9),
            record([9], [10, 4], [5], 0.2),
          ])
            call.write(m);
          call.end();
        });
      const [carried, first] = [await train(fromRound, 'run/half-2'), await train(policy, 'run/half-1')];
      const scale = (r: TrainRoundResponse) =>
        r.metrics!.values.loss_scale! * 2 ** r.metrics!.values.overflow_steps!;
      expect(scale(carried)).toBe(1024);
      expect(scale(first)).toBe(65536);
    } finally {
      halfClient.close();
      await started.server.shutdown('test over');
      await half.close();
    }
  });

  it('answers a repeated round with the checkpoint it already published, and refuses a different one under that name', async () => {
    const messages = [config({ outputUri: 'run/repeat' }), record([4, 5], [6], [7, 8], 0.9)];
    const first = await trainRound(messages);
    expect((await unary<object, GetStatusResponse>(client.getStatus.bind(client), {})).step).toBe(3);
    const again = await trainRound(messages);
    expect(again.checkpoint).toEqual(first.checkpoint);
    expect(again.steps).toBe(first.steps);
    expect(again.metrics!.values.loss_first).toBe(first.metrics!.values.loss_first);
    // The repeat took no optimizer step (the status counts the last call's steps).
    expect((await unary<object, GetStatusResponse>(client.getStatus.bind(client), {})).step).toBe(0);
    store.get(first.checkpoint!.artifact!);

    const other = await trainRound([
      config({ outputUri: 'run/repeat' }),
      record([4, 5], [6], [7, 8], 0.1),
    ]).catch((e: grpc.ServiceError) => e);
    expect((other as grpc.ServiceError).code).toBe(grpc.status.FAILED_PRECONDITION);
    expect((other as grpc.ServiceError).details).toMatch(/already exists from a different request/);
  });

  it('trains a LoRA adapter over gRPC, continues it, and refuses a shape that does not match the adapter it continues', async () => {
    const lora = { rank: 2, alpha: 4, targets: ['q_proj', 'v_proj'], rslora: false };
    const first = await trainRound([
      config({ lora, outputUri: 'run/lora-1' }),
      record([4, 5], [6], [7, 8], 0.9),
      record([9], [10, 4], [5], 0.2),
    ]);
    const dir = store.get(first.checkpoint!.artifact!);
    expect(existsSync(join(dir, 'adapter_model.safetensors'))).toBe(true);
    expect(existsSync(join(dir, 'model.safetensors'))).toBe(false);
    const withAdapter = { ...policy, adapter: first.checkpoint!.artifact };
    const second = await trainRound([
      config({ lora, policy: withAdapter, outputUri: 'run/lora-2' }),
      record([4, 5], [6], [7, 8], 0.9),
    ]);
    expect(second.steps).toBeGreaterThan(0);
    const codeOf = (p: Promise<unknown>) =>
      p.then(
        () => 'ok',
        (e: grpc.ServiceError) => `${e.code} ${e.details}`,
      );
    expect(
      await codeOf(
        trainRound([
          config({ lora: { ...lora, rank: 4 }, policy: withAdapter, outputUri: 'x' }),
          record([4], [5], [6], 0.5),
        ]),
      ),
    ).toMatch(/^3 config\.lora: asks for .*"rank":4.* but config\.policy\.adapter is .*"rank":2/);
    expect(
      await codeOf(
        trainRound([
          config({ lora: { ...lora, targets: ['embed_tokens'] }, outputUri: 'x' }),
          record([4], [5], [6], 0.5),
        ]),
      ),
    ).toMatch(/^3 config\.lora\.targets: 'embed_tokens' is not a linear layer/);
    expect(
      await codeOf(trainRound([config({ policy: withAdapter, outputUri: 'x' }), record([4], [5], [6], 0.5)])),
    ).toMatch(/^3 config\.lora: is required when config\.policy has an adapter/);
  });

  it('refuses records before the config, a missing output name, and an unknown algorithm', async () => {
    const codeOf = (p: Promise<unknown>) =>
      p.then(
        () => 'ok',
        (e: grpc.ServiceError) => `${e.code} ${e.details}`,
      );
    expect(await codeOf(trainRound([record([4], [5], [6], 0.5), config()]))).toMatch(
      /^3 config: must be the first message/,
    );
    expect(await codeOf(trainRound([config({ outputUri: '' }), record([4], [5], [6], 0.5)]))).toMatch(
      /^3 config.output_uri: is required/,
    );
    expect(
      await codeOf(trainRound([config({ algorithm: 'ppo', outputUri: 'x' }), record([4], [5], [6], 0.5)])),
    ).toMatch(/^3 algo: unknown algorithm 'ppo'/);
    expect(
      await codeOf(trainRound([config({ outputUri: '../escape' }), record([4], [5], [6], 0.5)])),
    ).toMatch(/^3 name: '..\/escape' is not a name inside the artifact store/);
    // Training settings parse through the same schema as the CLI's flags and a run spec's.
    const bad = config({ outputUri: 'x' });
    if (bad.kind?.$case === 'config') bad.kind.config.optimizer!.schedule = 'foo';
    expect(await codeOf(trainRound([bad, record([4], [5], [6], 0.5)]))).toMatch(
      /^3 config\.optimizer\.schedule: .*"constant"\|"linear"\|"cosine"|^3 config\.optimizer\.schedule: Invalid option/,
    );
  });

  it('refuses records beyond the staleness bound, naming both versions, before any work', async () => {
    const codeOf = (p: Promise<unknown>) =>
      p.then(
        () => 'ok',
        (e: grpc.ServiceError) => `${e.code} ${e.details}`,
      );
    const at = (version: number) => {
      const r = record([4], [5], [6], 0.5);
      if (r.kind?.$case === 'record') r.kind.record.policyVersion = version;
      return r;
    };
    const trains5 = (maxStaleness: number) =>
      config({ policyVersion: 5, maxStaleness, outputUri: `stale/${maxStaleness}` });
    expect(await codeOf(trainRound([trains5(1), at(4), at(3)]))).toBe(
      '9 records[1] was sampled from policy version 3, but this round trains version 5 with max_staleness 1: records must come from versions 4..5',
    );
    expect(await codeOf(trainRound([trains5(0), at(6)]))).toMatch(
      /^9 records\[0\] was sampled from policy version 6/,
    );
    expect(await codeOf(trainRound([trains5(2), at(4), at(3)]))).toBe('ok');
  });
});
