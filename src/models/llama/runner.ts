/**
 * A decoder loaded into a Runtime worker: the inference graph compiled with the weights inside
 * (as initializers, so ONNX Runtime folds the weight transposes and prepacks the MatMuls once,
 * instead of transposing every weight on every step), and one KV cache per generation kept in
 * the worker's state, so a decoding step sends only B token ids in and B×V logits out. New
 * weights (a new checkpoint) mean a new session; new LoRA adapters need not: an adapter's A and B
 * are inputs read from the runner's state (`setAdapter`), so every adapter of one target set
 * decodes through one compiled graph (`forAdapters`). A training session's decoder reads the
 * weights from the training state itself, in its worker (`fromState`): each generation decodes
 * with the weights as they are then, so an optimizer step costs it nothing. A decoder with its
 * weights compiled in computes in the runtime's dtype (Runtime.dtype: float16 halves the weights
 * and the cache); one reading a training state's float32 weights computes in float32, or in the
 * dtype its options name (a float16 training session's). With
 * `oneRun` (the default on cuda, whose state crosses to the device at every run), a second session
 * decodes a whole untruncated generation in one run (graphs.ts, buildGenerationLoop): the prompt,
 * the ids and the KV cache cross once, not once per token. It holds its own copy of compiled-in
 * weights.
 */
import {
  allocate,
  type ComputeDtype,
  compile,
  compileLoop,
  type Moved,
  type ParameterSource,
  type Runtime,
  type Session,
  type WireTensor,
} from '../../engine/index.js';
import type { Adapter } from '../lora/adapter.js';
import type { LoraTarget } from '../lora/config.js';
import { AdapterSlots } from '../lora/slots.js';
import type { LlamaConfig } from './config.js';
import { fusedKernelsFor } from './decoder.js';
import {
  buildDecoderGraph,
  buildGenerationLoop,
  type DecoderGraphOptions,
  DRAW_OUTPUTS,
  GENERATION_OUTPUTS,
  pastKey,
  pastValue,
  presentKey,
  presentValue,
} from './graphs.js';
import type { HostTensor } from './weights.js';

let runnerCounter = 0;
/** The key `create`'s adapter is set under. */
const DEFAULT_ADAPTER = 'adapter';
let cacheCounter = 0;

const int64 = (rows: number[][]): WireTensor => ({
  dtype: 'int64',
  dims: [rows.length, rows[0]?.length ?? 0],
  data: BigInt64Array.from(rows.flat(), (v) => BigInt(v)),
});

/** A whole generation decoded in one run: [steps][rows] tokens, log-probs and entropies. */
export interface OneRunGeneration {
  tokens: number[][];
  logprobs: number[][];
  entropies: number[][];
}

/**
 * What generation needs of a decoder: its config and fresh KV caches; and, where it decodes a
 * generation in one run (DecoderOptions.oneRun), that: the prompt step's ids, mask and positions,
 * one uniform per step and row, and when a row stops.
 */
export interface Decoder {
  readonly config: LlamaConfig;
  openCache(batch: number): Promise<KvCache>;
  oneRun?(
    prompt: { ids: number[][]; mask: number[][]; positions: number[][] },
    uniforms: number[][],
    temperature: number,
    stop: { eosIds: number[]; padId: number },
  ): Promise<OneRunGeneration>;
}

export interface DecoderOptions {
  /** Build the one-run generation session too. @default true on the cuda provider */
  oneRun?: boolean;
  /**
   * What a decoder reading a training state's float32 weights computes in (float16: cast where
   * they are read, as the state's half-precision training graphs do). One with its weights
   * compiled in computes in the runtime's dtype.
   * @default 'float32'
   */
  dtype?: ComputeDtype;
}

export class DecoderRunner implements Decoder {
  private constructor(
    readonly config: LlamaConfig,
    private readonly session: Session,
    private readonly stateId: string,
    /** The adapters held, when the graph takes adapters (of one target set) as inputs. */
    private readonly adapters: AdapterSlots,
    /** The training state the weights are read from, when they are not compiled in. */
    private readonly weightsFrom: ParameterSource | undefined,
    /** The KV cache's element type: the graph's compute dtype. */
    readonly dtype: ComputeDtype,
    /** The whole-generation session (DecoderOptions.oneRun), in the same worker. */
    private readonly loop: Session | undefined,
  ) {
    if (loop) this.oneRun = (prompt, uniforms, t, stop) => this.generateInOneRun(prompt, uniforms, t, stop);
  }

  oneRun?: Decoder['oneRun'];

  /** The adapter a cache opened without a key decodes with (`create`'s). */
  private defaultAdapter: string | undefined;

  /**
   * The weights compiled in. With `adapter`: base + adapter, the adapter's tensors in the state as
   * `forAdapters` keeps them, set as the default so caches open without a key.
   */
  static async create(
    runtime: Runtime,
    config: LlamaConfig,
    weights: Record<string, HostTensor>,
    adapter?: Adapter,
    options: DecoderOptions = {},
  ) {
    const runner = await DecoderRunner.build(
      runtime,
      config,
      weights,
      adapter?.config.targets,
      undefined,
      options,
    );
    if (adapter) {
      await runner.setAdapter(DEFAULT_ADAPTER, adapter);
      runner.defaultAdapter = DEFAULT_ADAPTER;
    }
    return runner;
  }

  /**
   * Base weights compiled in, and any LoRA adapter on `targets` as inputs: one graph for every
   * such adapter, each set with `setAdapter` and decoded through `withAdapter`.
   */
  static forAdapters(
    runtime: Runtime,
    config: LlamaConfig,
    weights: Record<string, HostTensor>,
    targets: readonly LoraTarget[],
    options: DecoderOptions = {},
  ) {
    return DecoderRunner.build(runtime, config, weights, targets, undefined, options);
  }

  /**
   * The weights read where they live (a training state's parameters, a LoRA base's shared
   * tensors), in their worker, run after run: no copy, and nothing to rebuild when they change.
   * With `targets`, any adapter on them as inputs, as `forAdapters`.
   */
  static fromState(
    runtime: Runtime,
    config: LlamaConfig,
    source: ParameterSource,
    targets?: readonly LoraTarget[],
    options: DecoderOptions = {},
  ) {
    return DecoderRunner.build(runtime, config, undefined, targets, source, options);
  }

  private static async build(
    runtime: Runtime,
    config: LlamaConfig,
    weights: Record<string, HostTensor> | undefined,
    targets: readonly LoraTarget[] | undefined,
    weightsFrom: ParameterSource | undefined,
    options: DecoderOptions,
  ) {
    const dtype = weights ? runtime.dtype : (options.dtype ?? 'float32');
    const shape: Omit<DecoderGraphOptions, 'lastOnly' | 'sampling'> = {
      dtype,
      ...(weights ? { weights } : {}),
      // ONNX Runtime's fused kernels where every node costs a dispatch; the cpu provider keeps the
      // unfused ops, so its samples are the ones every earlier figure was measured with.
      fusedKernels: fusedKernelsFor(runtime.provider),
      ...(targets ? { adapterInputs: targets } : {}),
    };
    const { graph, outputs } = buildDecoderGraph(config, { ...shape, lastOnly: true, sampling: true });
    // The cache each step writes back stays on the device; only ids go in and draws come out,
    // written to host memory by the run itself. The logits stay on the device unless fetched.
    const session = await runtime.load(compile(graph, outputs, 'decoder', { provider: runtime.provider }), {
      outputsOnDevice: true,
      hostOutputs: DRAW_OUTPUTS,
      ...(weightsFrom ? { near: weightsFrom.session } : {}),
    });
    const loop =
      (options.oneRun ?? runtime.provider === 'cuda')
        ? await runtime.load(
            compileLoop(buildGenerationLoop(config, shape), 'generate', { provider: runtime.provider }),
            { near: session },
          )
        : undefined;
    const stateId = `decoder-${process.pid}-${runnerCounter++}`;
    const store = {
      put: (tensors: Record<string, WireTensor>) => session.setState(stateId, tensors),
      drop: (keys: string[]) => session.dropState(stateId, keys),
    };
    return new DecoderRunner(
      config,
      session,
      stateId,
      new AdapterSlots(config, targets, 'decoder', store),
      weightsFrom,
      dtype,
      loop,
    );
  }

  /** Puts `adapter` in this runner's state under `key` (on the device where the provider has one). */
  setAdapter(key: string, adapter: Adapter): Promise<void> {
    return this.adapters.set(key, adapter);
  }

  dropAdapter(key: string): Promise<void> {
    return this.adapters.delete(key);
  }

  /** This decoder with the adapter set under `key`: what `generate` decodes through. */
  withAdapter(key: string): Decoder {
    this.adapters.require(key);
    return {
      config: this.config,
      openCache: (batch) => this.openCache(batch, key),
      ...(this.loop
        ? { oneRun: (prompt, uniforms, t, stop) => this.generateInOneRun(prompt, uniforms, t, stop, key) }
        : {}),
    };
  }

  /** A fresh, empty KV cache for `batch` rows (decoding with the adapter under `adapter`). */
  async openCache(batch: number, adapter = this.defaultAdapter): Promise<KvCache> {
    if (this.adapters.taken !== (adapter !== undefined))
      throw new Error(
        this.adapters.taken
          ? 'this decoder decodes with an adapter: open caches through withAdapter'
          : 'this decoder takes no adapter',
      );
    const id = `cache-${cacheCounter++}`;
    const { numKvHeads, headDim, numLayers } = this.config;
    const empty = (): WireTensor => ({
      dtype: this.dtype,
      dims: [batch, numKvHeads, 0, headDim],
      data: allocate(this.dtype, 0),
    });
    const tensors: Record<string, WireTensor> = {};
    for (let i = 0; i < numLayers; i++) {
      tensors[`${id}/${pastKey(i)}`] = empty();
      tensors[`${id}/${pastValue(i)}`] = empty();
    }
    await this.session.setState(this.stateId, tensors);
    return new KvCache(this, id, batch, adapter);
  }

  private binding(cache: KvCache) {
    const reads: Record<string, string> = {};
    const writes: Record<string, string> = {};
    if (cache.adapter !== undefined) Object.assign(reads, this.adapters.run(cache.adapter).reads);
    for (let i = 0; i < this.config.numLayers; i++) {
      for (const [past, present] of [
        [pastKey(i), presentKey(i)],
        [pastValue(i), presentValue(i)],
      ] as const) {
        reads[past] = `${cache.id}/${past}`;
        writes[present] = `${cache.id}/${past}`;
      }
    }
    const from = this.weightsFrom;
    return {
      state: this.stateId,
      reads,
      writes,
      ...(from
        ? { shared: { state: from.state, reads: Object.fromEntries(from.keys.map((k) => [k, k])) } }
        : {}),
    };
  }

  /** The adapter's scale, for a decoder that takes adapters as inputs. */
  private scaleFeed(cache: KvCache): Record<string, WireTensor> {
    return cache.adapter === undefined ? {} : this.adapters.run(cache.adapter).feeds;
  }

  /** @internal one forward over new tokens; logits of each row's last position, [B·V]. */
  async advance(
    cache: KvCache,
    ids: number[][],
    mask: number[][],
    positions: number[][],
  ): Promise<Float32Array> {
    // ONNX Runtime wants every input fed; the draw's inputs are unused when only logits are fetched.
    const out = await this.session.run(
      {
        input_ids: int64(ids),
        attention_mask: int64(mask),
        position_ids: int64(positions),
        uniform: { dtype: 'float32', dims: [ids.length], data: new Float32Array(ids.length) },
        inv_temperature: { dtype: 'float32', dims: [], data: Float32Array.of(1) },
        ...this.scaleFeed(cache),
      },
      ['logits'],
      this.binding(cache),
    );
    return out.logits!.data as Float32Array;
  }

  /** @internal one forward and an untruncated draw (temperature 0: greedy) per row, in the graph. */
  async advanceAndDraw(
    cache: KvCache,
    ids: number[][],
    mask: number[][],
    positions: number[][],
    uniforms: number[],
    temperature: number,
  ): Promise<{ tokens: number[]; logprobs: number[]; entropies: number[] }> {
    const [token, logprob] =
      temperature === 0 ? ['greedy_token', 'greedy_logprob'] : ['next_token', 'next_logprob'];
    const out = await this.session.run(
      {
        input_ids: int64(ids),
        attention_mask: int64(mask),
        position_ids: int64(positions),
        uniform: { dtype: 'float32', dims: [uniforms.length], data: Float32Array.from(uniforms) },
        inv_temperature: {
          dtype: 'float32',
          dims: [],
          data: Float32Array.of(temperature === 0 ? 1 : 1 / temperature),
        },
        ...this.scaleFeed(cache),
      },
      [token, logprob, 'entropy'],
      this.binding(cache),
    );
    return {
      tokens: Array.from(out[token]!.data as BigInt64Array, Number),
      logprobs: Array.from(out[logprob]!.data as Float32Array),
      entropies: Array.from(out.entropy!.data as Float32Array),
    };
  }

  /** A whole generation in the one-run session (Decoder.oneRun), with the adapter under `adapter`. */
  private async generateInOneRun(
    prompt: { ids: number[][]; mask: number[][]; positions: number[][] },
    uniforms: number[][],
    temperature: number,
    stop: { eosIds: number[]; padId: number },
    adapter = this.defaultAdapter,
  ): Promise<OneRunGeneration> {
    if (this.adapters.taken !== (adapter !== undefined))
      throw new Error('this decoder decodes with an adapter: generate through withAdapter');
    const rows = prompt.ids.length;
    const { numKvHeads, headDim, numLayers } = this.config;
    const empty: WireTensor = {
      dtype: this.dtype,
      dims: [rows, numKvHeads, 0, headDim],
      data: allocate(this.dtype, 0),
    };
    const past: Record<string, WireTensor> = {};
    for (let i = 0; i < numLayers; i++) [past[pastKey(i)], past[pastValue(i)]] = [empty, empty];
    const slot = adapter !== undefined ? this.adapters.run(adapter) : undefined;
    const from = this.weightsFrom;
    const out = await this.loop!.run(
      {
        input_ids: int64(prompt.ids),
        attention_mask: int64(prompt.mask),
        position_ids: int64(prompt.positions),
        ...past,
        done: { dtype: 'float32', dims: [rows], data: new Float32Array(rows) },
        uniform: {
          dtype: 'float32',
          dims: [uniforms.length, rows],
          data: Float32Array.from(uniforms.flat()),
        },
        inv_temperature: {
          dtype: 'float32',
          dims: [],
          data: Float32Array.of(temperature === 0 ? 1 : 1 / temperature),
        },
        greedy: { dtype: 'float32', dims: [], data: Float32Array.of(temperature === 0 ? 1 : 0) },
        eos_ids: {
          dtype: 'int64',
          dims: [stop.eosIds.length],
          data: BigInt64Array.from(stop.eosIds, BigInt),
        },
        pad_id: { dtype: 'int64', dims: [], data: BigInt64Array.of(BigInt(stop.padId)) },
        ...slot?.feeds,
      },
      [...GENERATION_OUTPUTS],
      {
        state: this.stateId,
        reads: { ...slot?.reads },
        writes: {},
        ...(from
          ? { shared: { state: from.state, reads: Object.fromEntries(from.keys.map((k) => [k, k])) } }
          : {}),
      },
    );
    const byStep = (t: WireTensor) => {
      const values = Array.from(t.data as ArrayLike<number | bigint>, Number);
      return Array.from({ length: t.dims[0]! }, (_, k) => values.slice(k * rows, (k + 1) * rows));
    };
    return {
      tokens: byStep(out.tokens!),
      logprobs: byStep(out.logprobs!),
      entropies: byStep(out.entropies!),
    };
  }

  /** @internal */
  async closeCache(cache: KvCache): Promise<void> {
    const keys: string[] = [];
    for (let i = 0; i < this.config.numLayers; i++)
      keys.push(`${cache.id}/${pastKey(i)}`, `${cache.id}/${pastValue(i)}`);
    await this.session.dropState(this.stateId, keys);
  }

  async release(): Promise<void> {
    await this.session.dropState(this.stateId);
    await this.loop?.release();
    await this.session.release();
  }

  /** The session decoding runs in: its provider, the bytes it moved, its device memory. */
  get runner(): Session {
    return this.session;
  }

  /** The bytes both sessions (step by step, and one run) moved between host and device so far. */
  get moved(): Moved {
    const [a, b] = [this.session.moved, this.loop?.moved];
    return {
      toDevice: a.toDevice + (b?.toDevice ?? 0),
      toHost: a.toHost + (b?.toHost ?? 0),
      readBacks: a.readBacks + (b?.readBacks ?? 0),
    };
  }
}

/** One generation's keys and values, living in the runner's worker. */
export class KvCache {
  constructor(
    private readonly runner: DecoderRunner,
    readonly id: string,
    readonly batch: number,
    /** The key of the adapter this generation decodes with, on a decoder that takes adapters. */
    readonly adapter?: string,
  ) {}

  /** Feeds new tokens (B×T, with the mask over past + new and their positions); returns last logits. */
  step(ids: number[][], mask: number[][], positions: number[][]): Promise<Float32Array> {
    return this.runner.advance(this, ids, mask, positions);
  }

  /** Feeds new tokens and draws each row's next one in the graph (no top-k/top-p, no mixture). */
  stepAndDraw(
    ids: number[][],
    mask: number[][],
    positions: number[][],
    uniforms: number[],
    temperature: number,
  ) {
    return this.runner.advanceAndDraw(this, ids, mask, positions, uniforms, temperature);
  }

  close(): Promise<void> {
    return this.runner.closeCache(this);
  }
}
