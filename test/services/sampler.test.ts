import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SamplerCore, samplerService } from '../../services/sampler/service.js';
import { Runtime } from '../../src/engine/index.js';
import { CompletionSource, type ModelRef } from '../../src/gen/duel/v1/common.js';
import {
  type LoadModelRequest,
  type LoadModelResponse,
  type LogprobsRequest,
  type LogprobsResponse,
  PolicySamplerServiceClient,
  type SampleRequest,
  type SampleResponse,
} from '../../src/gen/duel/v1/sampler.js';
import { parseLlamaConfig } from '../../src/models/llama/config.js';
import { initLlamaWeights } from '../../src/models/llama/weights.js';
import { initAdapter, writeAdapterDir } from '../../src/models/lora/adapter.js';
import { parseLoraFlag } from '../../src/models/lora/config.js';
import { saveModelDir } from '../../src/models/model-dir.js';
import { wordLevelTokenizer } from '../../src/models/tokenizer.js';
import { Admission } from '../../src/platform/admission.js';
import { FileArtifactStore } from '../../src/platform/artifacts.js';
import type { GrpcServer } from '../../src/platform/grpc/server.js';
import { violationsOf } from '../../src/platform/grpc/status-details.js';
import { ServiceMetrics } from '../../src/platform/metrics.js';
import { collect, startService, unary } from '../helpers/grpc.js';
import { fileTempDir } from '../helpers/tmp.js';

const root = fileTempDir('duel-sampler-');
const runtime = new Runtime({ workers: 1, intraOpThreads: 1 });
let server: GrpcServer;
let client: PolicySamplerServiceClient;
let model: ModelRef;
let adapters: ModelRef[];
let core: SamplerCore;
const metrics = new ServiceMetrics('sampler');

beforeAll(async () => {
  const cfg = parseLlamaConfig({
    model_type: 'qwen2',
    vocab_size: 12,
    hidden_size: 16,
    intermediate_size: 32,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    max_position_embeddings: 64,
    eos_token_id: 3,
    pad_token_id: 1,
  });
  const tok = wordLevelTokenizer(['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h']);
  const src = join(root, 'src');
  saveModelDir(src, cfg, initLlamaWeights(cfg, 4), {
    extraFiles: {
      'tokenizer.json': JSON.stringify(tok.tokenizerJson),
      'tokenizer_config.json': JSON.stringify(tok.tokenizerConfig),
    },
  });
  const ref = new FileArtifactStore(join(root, 'store')).put(src, 'policy');
  model = { artifact: ref, adapter: undefined, name: 'policy' };
  // Two adapters of one target set (different ranks) and one of another, in the same store.
  const store = new FileArtifactStore(join(root, 'store'));
  adapters = [
    'rank=2,alpha=4,targets=q_proj+v_proj',
    'rank=4,alpha=4,targets=q_proj+v_proj',
    'rank=2,alpha=4,targets=all',
  ].map((spec, i) => {
    const a = initAdapter(cfg, parseLoraFlag(spec), i);
    for (const [name, t] of Object.entries(a.tensors)) if (name.endsWith('lora_B.weight')) t.data.fill(0.3);
    writeAdapterDir(join(root, `adapter-${i}`), a, 'policy');
    return {
      artifact: ref,
      adapter: store.put(join(root, `adapter-${i}`), `adapter-${i}`),
      name: `adapter-${i}`,
    };
  });
  core = new SamplerCore(runtime, undefined, metrics);
  let address: string;
  ({ server, address } = await startService([samplerService(core)]));
  client = new PolicySamplerServiceClient(address, grpc.credentials.createInsecure());
});

afterAll(async () => {
  client?.close();
  await server?.shutdown('test over');
  await runtime.close();
});

const sampleRequest = (extra: Partial<SampleRequest> = {}): SampleRequest => ({
  model,
  prompts: [
    { tokenIds: [], text: 'a b c', id: 'x' },
    { tokenIds: [5, 6], text: '', id: 'y' },
  ],
  params: { numSamples: 2, maxNewTokens: 5, temperature: 1, topK: 0, topP: 1, seed: 7 },
  mixtureReference: undefined,
  mixtureCoef: 0,
  ...extra,
});

describe('PolicySamplerService', () => {
  it('loads a model by reference and digest', async () => {
    const res = await unary<LoadModelRequest, LoadModelResponse>(client.loadModel.bind(client), { model });
    expect(res.parameterCount).toBeGreaterThan(1000);
    const wrong = { model: { ...model, artifact: { ...model.artifact!, sha256: 'f'.repeat(64) } } };
    await expect(unary(client.loadModel.bind(client), wrong)).rejects.toMatchObject({
      code: grpc.status.FAILED_PRECONDITION,
      details: expect.stringMatching(/manifest digest .* does not match/),
    });
  });

  it('streams one completion per prompt and sample, reproducibly under a seed', async () => {
    const out: SampleResponse[] = await collect(client.sample(sampleRequest()));
    expect(out.map((r) => [r.promptIndex, r.sampleIndex]).sort()).toEqual([
      [0, 0],
      [0, 1],
      [1, 0],
      [1, 1],
    ]);
    for (const r of out) {
      expect(r.completion!.tokenIds.length).toBeGreaterThan(0);
      expect(r.completion!.tokenIds.length).toBeLessThanOrEqual(5);
      expect(r.completion!.tokenLogprobs).toHaveLength(r.completion!.tokenIds.length);
      expect(r.completion!.source).toBe(CompletionSource.COMPLETION_SOURCE_POLICY);
    }
    const generated = out.reduce((n, r) => n + r.completion!.tokenIds.length, 0);
    expect(await metrics.text()).toMatch(
      new RegExp(`duel_sampler_tokens_generated_total\\{service="sampler"\\} ${generated}\\b`),
    );
    const again: SampleResponse[] = await collect(client.sample(sampleRequest()));
    expect(again.map((r) => r.completion!.tokenIds)).toEqual(out.map((r) => r.completion!.tokenIds));

    // Logprobs scores the same completions the sampler reported.
    const res = await unary<LogprobsRequest, LogprobsResponse>(client.logprobs.bind(client), {
      model,
      sequences: out.map((r) => ({
        promptIds: r.promptIndex === 0 ? [4, 5, 6] : [5, 6],
        completionIds: r.completion!.tokenIds,
      })),
    });
    for (const [i, s] of res.results.entries()) expect(s.logprob).toBeCloseTo(out[i]!.completion!.logprob, 4);
  });

  it('serves a model with each LoRA adapter, and unloading the base unloads its adapters', async () => {
    // What each model drew and the log-probs it gave them: the adapters change the latter even
    // where a near-uniform random model draws the same tokens under one seed.
    const tokensOf = async (m: ModelRef) =>
      (await collect<SampleResponse>(client.sample(sampleRequest({ model: m })))).map((r) => ({
        tokens: r.completion!.tokenIds,
        logprob: r.completion!.logprob,
      }));
    const plain = await tokensOf(model);
    const [first, second, all] = [
      await tokensOf(adapters[0]!),
      await tokensOf(adapters[1]!),
      await tokensOf(adapters[2]!),
    ];
    for (const [i, t] of [first, second, all].entries()) expect(t, `adapter ${i}`).not.toEqual(plain);
    expect(second).not.toEqual(first);
    // A repeat is served from the loaded adapter, the same under the seed.
    expect(await tokensOf(adapters[0]!)).toEqual(first);
    expect(core.loaded).toBe(4);
    const r = await unary<{ model: ModelRef }, { wasLoaded: boolean }>(client.unloadModel.bind(client), {
      model,
    });
    expect(r.wasLoaded).toBe(true);
    expect(core.loaded).toBe(0);
    // And loads again on demand.
    expect(await tokensOf(adapters[1]!)).toEqual(second);
  });

  it('answers bad requests with INVALID_ARGUMENT naming the fields, and keeps serving', async () => {
    const bad = sampleRequest({
      prompts: [],
      params: { numSamples: 2, maxNewTokens: 5, temperature: -1, topK: 0, topP: 1, seed: 1 },
    });
    const err = await collect(client.sample(bad)).catch((e: grpc.ServiceError) => e);
    expect((err as grpc.ServiceError).code).toBe(grpc.status.INVALID_ARGUMENT);
    const fields = violationsOf(err as grpc.ServiceError).map((v) => v.field);
    expect(fields).toEqual(expect.arrayContaining(['prompts', 'params.temperature']));
    const ok: SampleResponse[] = await collect(
      client.sample(sampleRequest({ prompts: [{ tokenIds: [4], text: '', id: '' }] })),
    );
    expect(ok).toHaveLength(2);
  });

  it('refuses a call beyond its admission limits with RESOURCE_EXHAUSTED', async () => {
    const { server: busy, address } = await startService([
      samplerService(new SamplerCore(runtime, undefined, undefined, new Admission(1, 0))),
    ]);
    const other = new PolicySamplerServiceClient(address, grpc.credentials.createInsecure());
    try {
      await unary<LoadModelRequest, LoadModelResponse>(other.loadModel.bind(other), { model });
      const long = sampleRequest({
        params: { numSamples: 4, maxNewTokens: 48, temperature: 1, topK: 0, topP: 1, seed: 1 },
      });
      const results = await Promise.allSettled([collect(other.sample(long)), collect(other.sample(long))]);
      const codes = results.map((r) =>
        r.status === 'fulfilled' ? 'OK' : (r.reason as grpc.ServiceError).code,
      );
      expect(codes.sort()).toEqual([grpc.status.RESOURCE_EXHAUSTED, 'OK'].sort());
    } finally {
      other.close();
      await busy.shutdown('test over');
    }
  });
});
