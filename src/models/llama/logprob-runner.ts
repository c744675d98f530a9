/**
 * Completion log-probs of a loaded decoder, batched: what `duel model logprobs`, the trainer's
 * reference log-probs and the estimators (KL to π_ref) read. Weights live in the worker's state
 * (WeightsSession), the adapters beside them; or, `fromState`, where a training state or a shared
 * LoRA base already holds them.
 */
import {
  type ComputeDtype,
  compile,
  Graph,
  type ParameterSource,
  type Runtime,
  type Tensor,
  WeightsSession,
} from '../../engine/index.js';
import { type CompletionRecord, completionBatch } from '../batch.js';
import { castWeight } from '../common/precision.js';
import type { Adapter } from '../lora/adapter.js';
import type { LoraTarget } from '../lora/config.js';
import { AdapterSlots, declareAdapterInputs } from '../lora/slots.js';
import type { LlamaConfig } from './config.js';
import { fusedKernelsFor } from './decoder.js';
import { sequenceLogprobs } from './logprobs.js';
import { type HostTensor, llamaParams } from './weights.js';

export interface CompletionLogprobs {
  /** Σ log π(y_t | x, y_<t) over the completion. */
  summed: number;
  /** One per completion token. */
  perToken: number[];
}

/** What scoring needs: completion log-probs of records. */
export interface Scorer {
  logprobs(records: CompletionRecord[], maxBatch?: number): Promise<CompletionLogprobs[]>;
}

/** The key `create`'s adapter is set under. */
const DEFAULT_ADAPTER = 'adapter';

/**
 * `dtype`: what the decoder computes in (its weights cast in the graph, precision.ts; the
 * log-softmax stays float32). A trainer computing in float16 scores its frozen models the same
 * way, so that π_θ and π_t agree at step 0 to half precision's rounding, not beyond it.
 */
export interface LogprobOptions {
  /** @default float32 */
  dtype?: ComputeDtype;
}

export class LogprobRunner implements Scorer {
  private constructor(
    readonly config: LlamaConfig,
    private readonly model: WeightsSession,
    private readonly padId: number,
    /** The adapters held, when the graph takes adapters (of one target set) as inputs. */
    private readonly adapters: AdapterSlots,
  ) {}

  /**
   * With `adapter`: log-probs of base + adapter. The graph takes any adapter on the same target
   * set as inputs, so `forAdapters` then `setAdapter` serves many adapters through one compiled
   * graph; `adapter` given here is set as the default.
   */
  static async create(
    runtime: Runtime,
    config: LlamaConfig,
    weights: Record<string, HostTensor>,
    adapter?: Adapter,
    options: LogprobOptions = {},
  ) {
    const runner = await LogprobRunner.build(runtime, config, { weights }, adapter?.config.targets, options);
    if (adapter) await runner.setAdapter(DEFAULT_ADAPTER, adapter);
    return runner;
  }

  /** A runner for every adapter on `targets` over these weights; set each with `setAdapter`. */
  static forAdapters(
    runtime: Runtime,
    config: LlamaConfig,
    weights: Record<string, HostTensor>,
    targets: readonly LoraTarget[],
    options: LogprobOptions = {},
  ) {
    return LogprobRunner.build(runtime, config, { weights }, targets, options);
  }

  /**
   * The weights read where they live (a LoRA base shared by a round's training state, its
   * decoder and this), in their worker: no copy. With `targets`, any adapter on them as inputs.
   */
  static fromState(
    runtime: Runtime,
    config: LlamaConfig,
    source: ParameterSource,
    targets?: readonly LoraTarget[],
    options: LogprobOptions = {},
  ) {
    return LogprobRunner.build(runtime, config, { source }, targets, options);
  }

  private static async build(
    runtime: Runtime,
    config: LlamaConfig,
    from: { weights: Record<string, HostTensor> } | { source: ParameterSource },
    targets: readonly LoraTarget[] | undefined,
    { dtype = 'float32' }: LogprobOptions,
  ) {
    const g = new Graph();
    const params = new Map<string, Tensor>();
    const base = llamaParams(config);
    for (const spec of base) params.set(spec.name, g.input(spec.name, 'float32', spec.shape));
    const inputs = targets ? declareAdapterInputs(g, config, targets) : undefined;
    for (const [name, t] of inputs?.tensors ?? []) params.set(name, t);
    const { perToken, summed } = sequenceLogprobs(config, (n) => castWeight(n, params.get(n)!, dtype), {
      inputIds: g.input('input_ids', 'int64', ['B', 'T']),
      attentionMask: g.input('attention_mask', 'int64', ['B', 'T']),
      targets: g.input('targets', 'int64', ['B', 'T']),
      targetMask: g.input('target_mask', 'float32', ['B', 'T']),
      ...(inputs ? { lora: inputs.lora } : {}),
      fusedKernels: fusedKernelsFor(runtime.provider),
    });
    const model = compile(g, { per_token: perToken, summed }, 'logprobs', { provider: runtime.provider });
    const session =
      'source' in from
        ? await WeightsSession.over(runtime, model, from.source, 'logprobs')
        : await WeightsSession.load(
            runtime,
            model,
            from.weights,
            base.map((s) => s.name),
            'logprobs',
          );
    return new LogprobRunner(
      config,
      session,
      config.padTokenId ?? 0,
      new AdapterSlots(config, targets, 'scorer', session),
    );
  }

  /** Puts `adapter` in this runner's state under `key`. */
  setAdapter(key: string, adapter: Adapter): Promise<void> {
    return this.adapters.set(key, adapter);
  }

  dropAdapter(key: string): Promise<void> {
    return this.adapters.delete(key);
  }

  /** This scorer with the adapter set under `key`. */
  withAdapter(key: string): Scorer {
    this.adapters.require(key);
    return { logprobs: (records, maxBatch) => this.logprobs(records, maxBatch, key) };
  }

  async logprobs(
    records: CompletionRecord[],
    maxBatch = 32,
    adapter = this.adapters.taken ? DEFAULT_ADAPTER : undefined,
  ): Promise<CompletionLogprobs[]> {
    const slot = adapter !== undefined ? this.adapters.run(adapter) : undefined;
    const out: CompletionLogprobs[] = [];
    for (let start = 0; start < records.length; start += maxBatch) {
      const chunk = records.slice(start, start + maxBatch);
      const b = completionBatch(chunk, this.padId, this.config.vocabSize);
      const dims = [b.batch, b.length];
      const res = await this.model.run(
        {
          input_ids: { dtype: 'int64', dims, data: b.inputIds },
          attention_mask: { dtype: 'int64', dims, data: b.attentionMask },
          targets: { dtype: 'int64', dims, data: b.targets },
          target_mask: { dtype: 'float32', dims, data: b.targetMask },
          ...slot?.feeds,
        },
        ['per_token', 'summed'],
        slot?.reads,
      );
      const per = res.per_token!.data as Float32Array;
      chunk.forEach((r, i) => {
        const from = i * b.length + r.promptIds.length - 1;
        out.push({
          summed: (res.summed!.data as Float32Array)[i]!,
          perToken: Array.from(per.subarray(from, from + r.completionIds.length)),
        });
      });
    }
    return out;
  }

  release(): Promise<void> {
    return this.model.release();
  }
}
