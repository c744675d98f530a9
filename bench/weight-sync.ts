/**
 * `duel bench weight-sync`: how long a round's new weights take to reach a sampler, through the
 * local suite (the trainer and a sampler as processes, gRPC over loopback, a file artifact store):
 * from the trainer's TrainRound answer (the round is trained and published) to the first Sample
 * answered with those weights. For a full checkpoint every round, and for LoRA adapters of rank
 * 8, 16 and 64 on every linear layer (each round continuing the last). Each case trains one warm-up
 * round (its first load compiles the decoder the later rounds reuse, for LoRA) and then `rounds`
 * timed rounds; beside the times: the checkpoint's bytes, and the resident memory of the trainer
 * (restarted for each case) after the case's last round.
 */
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { LocalCluster } from '../src/client/local-cluster.js';
import { type ArtifactRef, type ModelRef, OptimizerConfig } from '../src/gen/duel/v1/common.js';
import { PolicySamplerServiceClient, type SampleResponse } from '../src/gen/duel/v1/sampler.js';
import {
  TrainerServiceClient,
  type TrainRoundRequest,
  type TrainRoundResponse,
} from '../src/gen/duel/v1/trainer.js';
import { initLlamaWeights } from '../src/models/llama/weights.js';
import { ALL_LINEAR } from '../src/models/lora/config.js';
import { saveModelDir } from '../src/models/model-dir.js';
import { FileArtifactStore } from '../src/platform/artifacts.js';
import { callClientStream } from '../src/platform/grpc/client.js';
import { DECODE_MODELS } from './decode.js';
import { quantile, rssMb } from './measure.js';

export interface WeightSyncOptions {
  /** Names of DECODE_MODELS. */
  models: string[];
  ranks: number[];
  /** Timed rounds per case. */
  rounds: number;
  log: (line: string) => void;
}

export interface WeightSyncRow {
  model: string;
  /** 'full', or the adapter's rank. */
  weights: 'full' | number;
  sync_ms: number[];
  p50_ms: number;
  p95_ms: number;
  checkpoint_bytes: number;
  trainer_rss_mb: number;
}

const dirBytes = (dir: string): number =>
  readdirSync(dir).reduce((sum, f) => {
    const p = join(dir, f);
    const st = statSync(p);
    return sum + (st.isDirectory() ? dirBytes(p) : st.size);
  }, 0);

/** Records of K = 2 short completions with a preference: what one round trains on. */
function records(vocab: number): TrainRoundRequest[] {
  const ids = (n: number, seed: number) =>
    Array.from({ length: n }, (_, i) => 4 + ((seed * 7 + i * 3) % (vocab - 4)));
  const completion = (tokenIds: number[]) => ({
    tokenIds,
    text: '',
    tokenLogprobs: [],
    logprob: 0,
    source: 1,
    finished: true,
  });
  return Array.from({ length: 8 }, (_, r) => ({
    kind: {
      $case: 'record' as const,
      record: {
        promptIds: ids(8, r),
        prompt: '',
        completions: [completion(ids(8, r + 1)), completion(ids(8, r + 2))],
        prefs: { rows: 2, cols: 2, values: [0.5, 0.7, 0.3, 0.5] },
        policyVersion: 0,
      },
    },
  }));
}

export async function runWeightSyncBench(o: WeightSyncOptions): Promise<{ rows: WeightSyncRow[] }> {
  const root = mkdtempSync(join(tmpdir(), 'duel-bench-sync-'));
  const cluster = await LocalCluster.start({
    samplers: 1,
    scorers: 1,
    artifactsRoot: join(root, 'artifacts'),
    bus: 'memory',
    env: { DUEL_LOG_LEVEL: 'warn' },
  });
  const creds = grpc.credentials.createInsecure();
  const trainer = new TrainerServiceClient(cluster.trainer.address, creds, {
    'grpc.max_receive_message_length': -1,
  });
  const sampler = new PolicySamplerServiceClient(cluster.samplers[0]!.address, creds);
  const rows: WeightSyncRow[] = [];
  let round = 0;
  try {
    for (const name of o.models) {
      const cfg = DECODE_MODELS[name];
      if (!cfg) throw new Error(`unknown model '${name}' (known: ${Object.keys(DECODE_MODELS).join(', ')})`);
      const dir = join(root, name);
      saveModelDir(dir, cfg, initLlamaWeights(cfg, 1));
      const base: ArtifactRef = new FileArtifactStore(join(root, 'artifacts')).put(dir, `${name}/base`);
      const train = (policy: ModelRef, rank: number | undefined): Promise<TrainRoundResponse> =>
        callClientStream(
          trainer,
          trainer.trainRound,
          [
            {
              kind: {
                $case: 'config',
                config: {
                  runId: 'sync',
                  round: ++round,
                  algorithm: 'sppo',
                  policy,
                  reference: undefined,
                  hyperparameters: { eta: '2' },
                  optimizer: OptimizerConfig.fromPartial({
                    name: 'adamw',
                    learningRate: 1e-3,
                    gradClip: 1,
                    steps: 1,
                    batchSize: 8,
                    schedule: 'constant',
                  }),
                  seed: 1,
                  outputUri: `sync/${name}/round-${round}`,
                  policyVersion: 0,
                  maxStaleness: 0,
                  lora: rank ? { rank, alpha: 2 * rank, targets: [...ALL_LINEAR], rslora: false } : undefined,
                },
              },
            },
            ...records(cfg.vocabSize),
          ],
          { deadlineMs: 600_000 },
          'TrainRound',
        );
      /** The first Sample answered with `model`, in ms from now. */
      const firstSample = async (model: ModelRef) => {
        const t0 = performance.now();
        const call = sampler.sample({
          model,
          prompts: [{ tokenIds: [4, 5, 6], text: '', id: 'p' }],
          params: { numSamples: 1, maxNewTokens: 1, temperature: 1, topK: 0, topP: 1, seed: 1 },
          mixtureReference: undefined,
          mixtureCoef: 0,
        });
        for await (const _ of call as AsyncIterable<SampleResponse>) break;
        call.cancel();
        return performance.now() - t0;
      };
      for (const rank of [undefined, ...o.ranks]) {
        const label = rank ? `rank ${rank}` : 'full';
        // A fresh trainer per case, so its resident memory is this case's alone.
        await cluster.trainer.stop();
        await cluster.trainer.start();
        const ref = (r: TrainRoundResponse): ModelRef =>
          rank
            ? { artifact: base, adapter: r.checkpoint!.artifact, name: label }
            : { artifact: r.checkpoint!.artifact, adapter: undefined, name: label };
        // The warm-up round: for LoRA its load compiles the shared decoder the timed rounds reuse.
        let last = await train({ artifact: base, adapter: undefined, name: 'base' }, rank);
        await firstSample(ref(last));
        const times: number[] = [];
        for (let i = 0; i < o.rounds; i++) {
          last = await train(ref(last), rank);
          times.push(await firstSample(ref(last)));
          o.log(
            `${name} ${label}: round ${i + 1}/${o.rounds} reached the sampler in ${times.at(-1)!.toFixed(0)} ms`,
          );
        }
        const ckpt = new URL(last.checkpoint!.artifact!.uri).pathname;
        rows.push({
          model: name,
          weights: rank ?? 'full',
          sync_ms: times,
          p50_ms: quantile(times, 0.5),
          p95_ms: quantile(times, 0.95),
          checkpoint_bytes: dirBytes(ckpt),
          trainer_rss_mb: rssMb(cluster.trainer.child.pid),
        });
      }
    }
    return { rows };
  } finally {
    trainer.close();
    sampler.close();
    await cluster.stop();
    rmSync(root, { recursive: true, force: true });
  }
}
