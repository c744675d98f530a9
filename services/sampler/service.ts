/**
 * PolicySamplerService: a thin adapter from the gRPC contract to src/models. Models are loaded by
 * reference (URI + manifest digest, verified before use, and a LoRA adapter's the same way) and
 * cached by those; Sample streams
 * one response per completion as soon as its batch is decoded; cancellation and deadlines stop
 * the decoding loop between steps. No math here: generation and scoring live in src/models.
 */
import type { Runtime } from '../../src/engine/index.js';
import { DuelError } from '../../src/errors.js';
import { type ArtifactRef, CompletionSource, type ModelRef } from '../../src/gen/duel/v1/common.js';
import {
  type LoadModelResponse,
  type LogprobsResponse,
  PolicySamplerServiceService,
  type SampleResponse,
} from '../../src/gen/duel/v1/sampler.js';
import { generate } from '../../src/models/generate.js';
import type { LlamaConfig } from '../../src/models/llama/config.js';
import { LogprobRunner, type Scorer } from '../../src/models/llama/logprob-runner.js';
import { type Decoder, DecoderRunner } from '../../src/models/llama/runner.js';
import { type HostTensor, llamaParams, parameterCount } from '../../src/models/llama/weights.js';
import { readAdapterDir } from '../../src/models/lora/adapter.js';
import { loadModelDir } from '../../src/models/model-dir.js';
import { TextTokenizer } from '../../src/models/tokenizer.js';
import { Admission } from '../../src/platform/admission.js';
import { artifactKey, type ResolveArtifact, resolveFileArtifact } from '../../src/platform/artifacts.js';
import { checkModelRef } from '../../src/platform/contract-checks.js';
import { service } from '../../src/platform/grpc/server.js';
import { LoadOnce } from '../../src/platform/load-once.js';
import type { ServiceMetrics } from '../../src/platform/metrics.js';
import { completionOf, generateOptionsOf } from '../../src/platform/sampling.js';
import { Violations } from '../../src/platform/violations.js';
import {
  DEFAULT_SAMPLER_LIMITS,
  type SamplerLimits,
  validateLogprobsRequest,
  validateSampleRequest,
} from './validate.js';

interface LoadedModel {
  config: LlamaConfig;
  decoder: Decoder;
  scorer: Scorer;
  tokenizer: TextTokenizer | undefined;
  parameters: number;
  release(): Promise<void>;
}

/** A base model's weights, its own decoder, and one decoder per target set for its adapters. */
interface LoadedBase extends LoadedModel {
  weights: Record<string, HostTensor>;
  /** One decoder and one scorer per target set, every adapter of that set in their state. */
  adapterRunners: Map<string, Promise<{ decoder: DecoderRunner; scorer: LogprobRunner }>>;
}

/** A model's cache key: its artifact's, and its adapter's when it has one. */
const modelKey = (ref: ModelRef) =>
  ref.adapter ? `${artifactKey(ref.artifact!)}+${artifactKey(ref.adapter)}` : artifactKey(ref.artifact!);

export class SamplerCore {
  private readonly bases = new LoadOnce<LoadedBase>();
  private readonly adapters = new LoadOnce<LoadedModel>();

  constructor(
    private readonly runtime: Runtime,
    readonly limits: SamplerLimits = DEFAULT_SAMPLER_LIMITS,
    readonly metrics?: ServiceMetrics,
    readonly admission = new Admission(4, 64),
    private readonly resolve: ResolveArtifact = resolveFileArtifact,
  ) {}

  /** A base model, loaded once per (URI, digest); concurrent loads share the work. */
  private base(artifact: ArtifactRef): Promise<LoadedBase> {
    return this.bases.get(artifactKey(artifact), async () => {
      const dir = await this.resolve(artifact);
      const m = loadModelDir(dir);
      const decoder = await DecoderRunner.create(this.runtime, m.config, m.weights);
      const scorer = await LogprobRunner.create(this.runtime, m.config, m.weights);
      const adapterRunners: LoadedBase['adapterRunners'] = new Map();
      return {
        config: m.config,
        weights: m.weights,
        decoder,
        scorer,
        tokenizer: TextTokenizer.tryFromDir(dir),
        parameters: parameterCount(llamaParams(m.config)),
        adapterRunners,
        async release() {
          await decoder.release();
          await scorer.release();
          for (const r of adapterRunners.values()) {
            const { decoder: d, scorer: s } = await r;
            await d.release();
            await s.release();
          }
        },
      };
    });
  }

  /**
   * Loads once per (URI, digest) of the model and of its adapter. Adapters of one target set on
   * one base decode and score through one compiled graph each, their tensors set into its state:
   * a new round's adapter compiles nothing.
   */
  load(ref: ModelRef): Promise<LoadedModel> {
    if (!ref.adapter) return this.base(ref.artifact!);
    return this.adapters.get(modelKey(ref), async () => {
      const base = await this.base(ref.artifact!);
      const adapter = readAdapterDir(await this.resolve(ref.adapter!), base.config);
      const targets = adapter.config.targets;
      let runners = base.adapterRunners.get(targets.join());
      if (!runners) {
        runners = (async () => ({
          decoder: await DecoderRunner.forAdapters(this.runtime, base.config, base.weights, targets),
          scorer: await LogprobRunner.forAdapters(this.runtime, base.config, base.weights, targets),
        }))();
        base.adapterRunners.set(targets.join(), runners);
      }
      const { decoder, scorer } = await runners;
      const key = artifactKey(ref.adapter!);
      await decoder.setAdapter(key, adapter);
      await scorer.setAdapter(key, adapter);
      return {
        config: base.config,
        decoder: decoder.withAdapter(key),
        scorer: scorer.withAdapter(key),
        tokenizer: base.tokenizer,
        parameters: base.parameters,
        async release() {
          await decoder.dropAdapter(key);
          await scorer.dropAdapter(key);
        },
      };
    });
  }

  /** Unloads a model; a base takes the adapters loaded on it along. */
  async unload(ref: ModelRef): Promise<boolean> {
    if (!ref.adapter) {
      const prefix = `${modelKey(ref)}+`;
      for (const key of this.adapters.keys().filter((k) => k.startsWith(prefix))) {
        const adapter = await this.adapters.delete(key)?.catch(() => undefined);
        await adapter?.release();
      }
    }
    const m = ref.adapter
      ? await this.adapters.delete(modelKey(ref))
      : await this.bases.delete(modelKey(ref));
    if (!m) return false;
    await m.release();
    return true;
  }

  get loaded(): number {
    return this.bases.size + this.adapters.size;
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
      // Admission: a bounded number decode at once, a bounded queue waits, the rest are refused.
      const options = {
        ...generateOptionsOf(params, m.config, ctx.signal),
        ...(reference ? { mixture: { reference: reference.decoder, coef: req.mixtureCoef } } : {}),
      };
      const gens = await core.admission.run(() => generate(m.decoder, prompts, options), ctx.signal);
      core.metrics?.count(
        'duel_sampler_tokens_generated_total',
        'completion tokens generated',
        gens.reduce((n, g) => n + g.tokens.length, 0),
      );
      core.metrics?.count('duel_sampler_completions_total', 'completions generated', gens.length);
      for (const g of gens) {
        const completion = completionOf(
          g,
          m.tokenizer ? m.tokenizer.decode(g.tokens) : '',
          reference ? CompletionSource.COMPLETION_SOURCE_MIXTURE : CompletionSource.COMPLETION_SOURCE_POLICY,
        );
        yield { promptIndex: g.prompt, sampleIndex: g.sample, completion };
      }
    },

    async logprobs(req, ctx): Promise<LogprobsResponse> {
      validateLogprobsRequest(req, core.limits);
      const m = await core.load(req.model!);
      const sequences = req.sequences.map((s) => ({
        promptIds: [...s.promptIds],
        completionIds: [...s.completionIds],
      }));
      const scored = await core.admission.run(() => m.scorer.logprobs(sequences), ctx.signal);
      return { results: scored.map((s) => ({ logprob: s.summed, tokenLogprobs: s.perToken })) };
    },
  });
}
