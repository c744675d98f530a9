/**
 * PolicySamplerService: a thin adapter from the gRPC contract to src/models. Models are loaded by
 * reference (URI + manifest digest, verified before use) and cached by that pair; Sample streams
 * one response per completion as soon as its batch is decoded; cancellation and deadlines stop
 * the decoding loop between steps. No math here: generation and scoring live in src/models.
 */
import { randomInt } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { Runtime } from '../../src/engine/index.js';
import {
  type Completion as CompletionMessage,
  CompletionSource,
  type ModelRef,
} from '../../src/gen/duel/v1/common.js';
import {
  type LoadModelResponse,
  type LogprobsResponse,
  PolicySamplerServiceService,
  type SampleResponse,
} from '../../src/gen/duel/v1/sampler.js';
import { generate } from '../../src/models/generate.js';
import type { LlamaConfig } from '../../src/models/llama/config.js';
import { LogprobRunner } from '../../src/models/llama/logprob-runner.js';
import { DecoderRunner } from '../../src/models/llama/runner.js';
import { llamaParams } from '../../src/models/llama/weights.js';
import { loadModelDir } from '../../src/models/model-dir.js';
import { TextTokenizer } from '../../src/models/tokenizer.js';
import { verifyArtifact } from '../../src/platform/artifacts.js';
import { checkModelRef } from '../../src/platform/contract-checks.js';
import { DuelError } from '../../src/platform/errors.js';
import { service } from '../../src/platform/grpc/server.js';
import { Violations } from '../../src/platform/violations.js';
import {
  DEFAULT_SAMPLER_LIMITS,
  type SamplerLimits,
  validateLogprobsRequest,
  validateSampleRequest,
} from './validate.js';

interface LoadedModel {
  config: LlamaConfig;
  decoder: DecoderRunner;
  scorer: LogprobRunner;
  tokenizer: TextTokenizer | undefined;
  parameters: number;
}

const keyOf = (ref: ModelRef) => `${ref.artifact!.uri}#${ref.artifact!.sha256}`;

/** The local directory of a model reference, its digest verified. */
export function resolveModelDir(ref: ModelRef): string {
  const { uri, sha256 } = ref.artifact!;
  if (!uri.startsWith('file://'))
    throw DuelError.unavailable(
      `this sampler reads file:// artifacts; ${uri} needs an artifact store it does not have`,
    );
  const dir = fileURLToPath(uri);
  verifyArtifact(dir, sha256);
  return dir;
}

export class SamplerCore {
  private readonly models = new Map<string, Promise<LoadedModel>>();

  constructor(
    private readonly runtime: Runtime,
    readonly limits: SamplerLimits = DEFAULT_SAMPLER_LIMITS,
  ) {}

  /** Loads once per (URI, digest); concurrent loads of one model share the work. */
  load(ref: ModelRef): Promise<LoadedModel> {
    const key = keyOf(ref);
    let loading = this.models.get(key);
    if (!loading) {
      loading = (async () => {
        const dir = resolveModelDir(ref);
        const m = loadModelDir(dir);
        let tokenizer: TextTokenizer | undefined;
        try {
          tokenizer = TextTokenizer.fromDir(dir);
        } catch {
          tokenizer = undefined; // ids-only models are fine; text prompts are refused later
        }
        return {
          config: m.config,
          decoder: await DecoderRunner.create(this.runtime, m.config, m.weights),
          scorer: await LogprobRunner.create(this.runtime, m.config, m.weights),
          tokenizer,
          parameters: llamaParams(m.config).reduce((s, p) => s + p.shape.reduce((a, b) => a * b, 1), 0),
        };
      })();
      this.models.set(key, loading);
      // A failed load must not poison the cache for the next attempt.
      loading.catch(() => this.models.delete(key));
    }
    return loading;
  }

  async unload(ref: ModelRef): Promise<boolean> {
    const key = keyOf(ref);
    const loading = this.models.get(key);
    if (!loading) return false;
    this.models.delete(key);
    const m = await loading;
    await m.decoder.release();
    await m.scorer.release();
    return true;
  }

  get loaded(): number {
    return this.models.size;
  }
}

export function samplerService(core: SamplerCore) {
  return service(PolicySamplerServiceService, {
    async loadModel(req): Promise<LoadModelResponse> {
      const v = new Violations();
      checkModelRef(v, req.model, 'model');
      v.throwIfAny();
      const t0 = performance.now();
      const m = await core.load(req.model!);
      return { model: req.model, parameterCount: m.parameters, loadSeconds: (performance.now() - t0) / 1000 };
    },

    async unloadModel(req) {
      const v = new Violations();
      checkModelRef(v, req.model, 'model');
      v.throwIfAny();
      return { wasLoaded: await core.unload(req.model!) };
    },

    async *sample(req, ctx): AsyncIterable<SampleResponse> {
      validateSampleRequest(req, core.limits);
      const m = await core.load(req.model!);
      const reference = req.mixtureReference ? await core.load(req.mixtureReference) : undefined;
      const prompts = req.prompts.map((p, i) => {
        if (p.tokenIds.length > 0) return [...p.tokenIds];
        if (!m.tokenizer)
          throw DuelError.invalidArgument([
            { field: `prompts[${i}].text`, description: 'this model has no tokenizer.json: send token_ids' },
          ]);
        return m.tokenizer.encode(p.text);
      });
      const params = req.params!;
      const gens = await generate(m.decoder, prompts, {
        n: Math.max(1, params.numSamples),
        maxNewTokens: params.maxNewTokens,
        temperature: params.temperature ?? 1,
        topK: params.topK,
        topP: params.topP ?? 1,
        // Unset: a fresh seed per call (set one to reproduce samples).
        seed: params.seed ?? randomInt(2 ** 31),
        eosIds: m.config.eosTokenIds,
        padId: m.config.padTokenId ?? 0,
        signal: ctx.signal,
        ...(reference ? { mixture: { reference: reference.decoder, coef: req.mixtureCoef } } : {}),
      });
      for (const g of gens) {
        const completion: CompletionMessage = {
          tokenIds: g.tokens,
          text: m.tokenizer ? m.tokenizer.decode(g.tokens) : '',
          tokenLogprobs: g.logprobs,
          logprob: g.logprobs.reduce((a, b) => a + b, 0),
          source: reference
            ? CompletionSource.COMPLETION_SOURCE_MIXTURE
            : CompletionSource.COMPLETION_SOURCE_POLICY,
          finished: g.finish === 'eos',
        };
        yield { promptIndex: g.prompt, sampleIndex: g.sample, completion };
      }
    },

    async logprobs(req): Promise<LogprobsResponse> {
      validateLogprobsRequest(req, core.limits);
      const m = await core.load(req.model!);
      const scored = await m.scorer.logprobs(
        req.sequences.map((s) => ({ promptIds: [...s.promptIds], completionIds: [...s.completionIds] })),
      );
      return { results: scored.map((s) => ({ logprob: s.summed, tokenLogprobs: s.perToken })) };
    },
  });
}
