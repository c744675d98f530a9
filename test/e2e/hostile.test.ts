/**
 * Hostile input against the real suite (separate processes, a real nats-server): every RPC of
 * every service gets random bytes, mutations of a valid request (bit flips, truncations, spliced
 * slices, unknown fields, huge varints), an empty message and one over the message size limit.
 * Each must be answered with a deliberate status (never UNKNOWN, INTERNAL or a dropped
 * connection), and afterwards every service is still SERVING and still answers a valid request.
 * The mutations come from a seeded generator: a failure names the seed, method and input.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '../../src/client/local-cluster.js';
import type { ModelRef } from '../../src/gen/duel/v1/common.js';
import {
  CancelRunRequest,
  CreateRunRequest,
  CreateRunResponse,
  GetRunRequest,
  ListRunsRequest,
  RunsServiceService,
  WatchRunRequest,
} from '../../src/gen/duel/v1/runs.js';
import {
  LoadModelRequest,
  LogprobsRequest,
  PolicySamplerServiceService,
  SampleRequest,
  UnloadModelRequest,
} from '../../src/gen/duel/v1/sampler.js';
import {
  CompareRequest,
  LoadJudgeRequest,
  PreferenceScorerServiceService,
  RankRequest,
} from '../../src/gen/duel/v1/scorer.js';
import {
  ExportCheckpointRequest,
  GetStatusRequest,
  TrainerServiceService,
  TrainRoundRequest,
} from '../../src/gen/duel/v1/trainer.js';
import { FileArtifactStore } from '../../src/platform/artifacts.js';
import { readRunSpec } from '../../src/platform/run-spec.js';
import { mutate, noise, rng } from '../helpers/fuzz.js';
import { healthCheck } from '../helpers/grpc.js';
import { writeTinyRun } from '../helpers/tiny-run.js';

const SEED = Number(process.env.DUEL_FUZZ_SEED ?? 20261123);
const MUTANTS_PER_METHOD = 120;
const RANDOM_PER_METHOD = 20;
const MAX_MESSAGE_BYTES = 1 << 20;
/** Statuses that mean "the service did not decide what to say": a crash, a bug, a dropped call. */
const UNDELIBERATE = new Set([
  grpc.status.UNKNOWN,
  grpc.status.INTERNAL,
  grpc.status.UNAVAILABLE,
  grpc.status.DATA_LOSS,
]);

let root: string;
let cluster: LocalCluster;
let policy: ModelRef;
let judge: ModelRef;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'duel-hostile-'));
  const store = new FileArtifactStore(join(root, 'artifacts'));
  writeTinyRun(root);
  policy = { artifact: store.put(join(root, 'policy'), 'policy'), adapter: undefined, name: 'policy' };
  judge = { artifact: store.put(join(root, 'judge'), 'judge'), adapter: undefined, name: 'judge' };
  writeFileSync(
    join(root, 'prompts.jsonl'),
    [[1, 2], [3]].map((p) => JSON.stringify({ prompt_ids: p })).join('\n'),
  );
  cluster = await LocalCluster.start({
    artifactsRoot: join(root, 'artifacts'),
    logDir: join(root, 'logs'),
    env: { DUEL_GRPC_MAX_MESSAGE_BYTES: String(MAX_MESSAGE_BYTES), DUEL_ORCHESTRATOR_MAX_WAIT_MS: '5000' },
  });
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

interface Method {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
}

const raw = (b: Buffer) => b;

/** One call with raw request bytes; resolves with the status code and the response bytes (unary). */
function call(
  client: grpc.Client,
  m: Method,
  messages: Buffer[],
): Promise<{ code: grpc.status; details: string; data?: Buffer }> {
  const options = { deadline: Date.now() + 20_000 };
  return new Promise((resolve) => {
    const done = (err: grpc.ServiceError | null, data?: Buffer) =>
      resolve({
        code: err ? err.code : grpc.status.OK,
        details: err?.details ?? '',
        ...(data ? { data } : {}),
      });
    if (!m.requestStream && !m.responseStream) {
      client.makeUnaryRequest(m.path, raw, raw, messages[0]!, new grpc.Metadata(), options, done);
    } else if (m.requestStream) {
      const c = client.makeClientStreamRequest(m.path, raw, raw, new grpc.Metadata(), options, done);
      for (const msg of messages) c.write(msg);
      c.end();
    } else {
      const s = client.makeServerStreamRequest(m.path, raw, raw, messages[0]!, new grpc.Metadata(), options);
      let cancelled = false;
      // A watch of a live run streams until the run ends: one message is answer enough.
      s.on('data', () => {
        if (m.path.endsWith('/WatchRun') && !cancelled) {
          cancelled = true;
          s.cancel();
        }
      });
      s.on('error', () => {});
      s.on('status', (st: grpc.StatusObject) =>
        resolve({
          code: cancelled && st.code === grpc.status.CANCELLED ? grpc.status.OK : st.code,
          details: st.details,
        }),
      );
    }
  });
}

function validRequests(): Record<string, Buffer[]> {
  const enc = <T>(t: { encode(m: T): { finish(): Uint8Array } }, m: T) => Buffer.from(t.encode(m).finish());
  const items = [{ prompt: { tokenIds: [1, 2] }, candidates: [{ tokenIds: [3, 4] }, { tokenIds: [5] }] }];
  const spec = readRunSpec(
    (() => {
      const file = join(root, 'spec.json');
      writeFileSync(
        file,
        JSON.stringify({
          name: 'fuzz',
          algorithm: 'sppo',
          hyperparameters: { k: 2, eta: 2 },
          policy: join(root, 'policy'),
          judge: join(root, 'judge'),
          prompts: join(root, 'prompts.jsonl'),
          rounds: 1,
          sampling: { max_new_tokens: 2 },
          optimizer: { name: 'sgd', learning_rate: 0.01, steps: 1, batch_size: 1 },
        }),
      );
      return file;
    })(),
  );
  const completion = (ids: number[]) => ({ tokenIds: ids, finished: true });
  return {
    '/duel.v1.PolicySamplerService/LoadModel': [
      enc(LoadModelRequest, LoadModelRequest.fromPartial({ model: policy })),
    ],
    '/duel.v1.PolicySamplerService/UnloadModel': [
      enc(UnloadModelRequest, UnloadModelRequest.fromPartial({ model: policy })),
    ],
    '/duel.v1.PolicySamplerService/Sample': [
      enc(
        SampleRequest,
        SampleRequest.fromPartial({
          model: policy,
          prompts: [{ tokenIds: [1, 2] }],
          params: { numSamples: 2, maxNewTokens: 3, temperature: 1, seed: 1 },
        }),
      ),
    ],
    '/duel.v1.PolicySamplerService/Logprobs': [
      enc(
        LogprobsRequest,
        LogprobsRequest.fromPartial({
          model: policy,
          sequences: [{ promptIds: [1, 2], completionIds: [3, 4] }],
        }),
      ),
    ],
    '/duel.v1.PreferenceScorerService/LoadJudge': [
      enc(LoadJudgeRequest, LoadJudgeRequest.fromPartial({ judge })),
    ],
    '/duel.v1.PreferenceScorerService/Compare': [
      enc(CompareRequest, CompareRequest.fromPartial({ judge, items, probMode: 1 })),
    ],
    '/duel.v1.PreferenceScorerService/Rank': [
      enc(RankRequest, RankRequest.fromPartial({ judge, items, method: 1 })),
    ],
    '/duel.v1.TrainerService/TrainRound': [
      enc(
        TrainRoundRequest,
        TrainRoundRequest.fromPartial({
          kind: {
            $case: 'config',
            config: {
              runId: 'fuzz',
              round: 1,
              algorithm: 'sppo',
              policy,
              hyperparameters: { eta: '2' },
              optimizer: { name: 'sgd', learningRate: 0.01, steps: 1, batchSize: 1 },
              outputUri: 'fuzz/round-1',
            },
          },
        }),
      ),
      enc(
        TrainRoundRequest,
        TrainRoundRequest.fromPartial({
          kind: {
            $case: 'record',
            record: {
              promptIds: [1, 2],
              completions: [completion([3]), completion([4])],
              prefs: { rows: 2, cols: 2, values: [0.5, 0.7, 0.3, 0.5] },
            },
          },
        }),
      ),
    ],
    '/duel.v1.TrainerService/GetStatus': [enc(GetStatusRequest, {})],
    '/duel.v1.TrainerService/ExportCheckpoint': [
      enc(
        ExportCheckpointRequest,
        ExportCheckpointRequest.fromPartial({ checkpoint: { artifact: policy.artifact } }),
      ),
    ],
    '/duel.v1.RunsService/CreateRun': [
      enc(CreateRunRequest, CreateRunRequest.fromPartial({ spec, runId: 'fuzz' })),
    ],
    '/duel.v1.RunsService/GetRun': [enc(GetRunRequest, { runId: 'fuzz' })],
    '/duel.v1.RunsService/ListRuns': [enc(ListRunsRequest, ListRunsRequest.fromPartial({}))],
    '/duel.v1.RunsService/WatchRun': [enc(WatchRunRequest, WatchRunRequest.fromPartial({ runId: 'fuzz' }))],
    '/duel.v1.RunsService/CancelRun': [
      enc(CancelRunRequest, CancelRunRequest.fromPartial({ runId: 'fuzz' })),
    ],
  };
}

describe('hostile input to every RPC', () => {
  it('answers random, mutated, empty and oversized requests with deliberate codes and keeps serving', async () => {
    const services: [() => string, Record<string, Method>][] = [
      [() => cluster.samplers[0]!.address, PolicySamplerServiceService],
      [() => cluster.scorers[0]!.address, PreferenceScorerServiceService],
      [() => cluster.trainer.address, TrainerServiceService],
      [() => cluster.orchestrator.address, RunsServiceService],
    ];
    const valid = validRequests();
    const rand = rng(SEED);
    const bad: string[] = [];
    const tally = new Map<string, number>();
    let tried = 0;
    for (const [address, definition] of services) {
      const client = new grpc.Client(address(), grpc.credentials.createInsecure(), {
        'grpc.max_send_message_length': -1,
        'grpc.max_receive_message_length': -1,
      });
      const orchestrator = new grpc.Client(cluster.orchestrator.address, grpc.credentials.createInsecure());
      for (const m of Object.values(definition)) {
        const seeds = valid[m.path];
        expect(seeds, `no valid request to mutate for ${m.path}`).toBeDefined();
        const inputs: Buffer[][] = [
          [Buffer.alloc(0)],
          [Buffer.alloc(MAX_MESSAGE_BYTES + 1, 0x0a)],
          ...Array.from({ length: RANDOM_PER_METHOD }, () => [noise(rand)]),
          ...Array.from({ length: MUTANTS_PER_METHOD }, () =>
            seeds!.map((s) => (rand() < 0.7 ? mutate(s, rand) : s)),
          ),
        ];
        for (const input of inputs) {
          tried++;
          const res = await call(client, m, input);
          const key = `${m.path.split('/')[2]} ${grpc.status[res.code]}`;
          tally.set(key, (tally.get(key) ?? 0) + 1);
          if (UNDELIBERATE.has(res.code))
            bad.push(
              `${m.path} ← ${input.map((b) => b.subarray(0, 64).toString('hex')).join(' | ')}: ${grpc.status[res.code]} ${res.details}`,
            );
          // A mutant that still made a run: stop it, so the suite is not busy for the next ones.
          if (m.path.endsWith('/CreateRun') && res.code === grpc.status.OK && res.data) {
            const runId = CreateRunResponse.decode(res.data).run?.runId ?? '';
            await call(orchestrator, RunsServiceService.cancelRun, [
              Buffer.from(
                CancelRunRequest.encode(CancelRunRequest.fromPartial({ runId, reason: 'fuzz' })).finish(),
              ),
            ]);
          }
        }
      }
      client.close();
      orchestrator.close();
    }
    process.stderr.write(
      `hostile input: seed ${SEED}, ${tried} inputs\n${[...tally].map(([k, n]) => `  ${k}: ${n}`).join('\n')}\n`,
    );
    expect(bad).toEqual([]);

    for (const s of cluster.all) {
      expect(s.running, `${s.name} is still running`).toBe(true);
      expect(await healthCheck(s.address)).toBe('SERVING');
    }
    // Still does real work: a valid request to each service succeeds.
    for (const [address, definition] of services) {
      const client = new grpc.Client(address(), grpc.credentials.createInsecure());
      const m = Object.values(definition).find((x) => /\/(Sample|Compare|GetStatus|ListRuns)$/.test(x.path))!;
      expect((await call(client, m, valid[m.path]!)).code, m.path).toBe(grpc.status.OK);
      client.close();
    }
  }, 600_000);
});
