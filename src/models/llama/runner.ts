/**
 * A decoder loaded into a Runtime worker: the inference graph compiled once, the weights kept in
 * the worker's state, and one KV cache per generation kept there too, so a decoding step sends
 * only B token ids in and B×V logits out.
 */
import { compile, type Runtime, type Session, type WireTensor } from '../../engine/index.js';
import type { LlamaConfig } from './config.js';
import { buildDecoderGraph, pastKey, pastValue, presentKey, presentValue } from './graphs.js';
import type { HostTensor } from './weights.js';

let runnerCounter = 0;
let cacheCounter = 0;

const int64 = (rows: number[][]): WireTensor => ({
  dtype: 'int64',
  dims: [rows.length, rows[0]?.length ?? 0],
  data: BigInt64Array.from(rows.flat(), (v) => BigInt(v)),
});

export class DecoderRunner {
  private constructor(
    readonly config: LlamaConfig,
    private readonly session: Session,
    private readonly stateId: string,
    private readonly weightNames: string[],
  ) {}

  static async create(runtime: Runtime, config: LlamaConfig, weights: Record<string, HostTensor>) {
    const { graph, outputs } = buildDecoderGraph(config, { lastOnly: true });
    const session = await runtime.load(compile(graph, outputs, 'decoder'));
    const stateId = `decoder-${process.pid}-${runnerCounter++}`;
    const names = Object.keys(weights);
    await session.setState(stateId, weights);
    return new DecoderRunner(config, session, stateId, names);
  }

  /** Replaces the weights (same config) without recompiling, e.g. after a training round. */
  async setWeights(weights: Record<string, HostTensor>): Promise<void> {
    await this.session.setState(this.stateId, weights);
  }

  /** A fresh, empty KV cache for `batch` rows. */
  async openCache(batch: number): Promise<KvCache> {
    const id = `cache-${cacheCounter++}`;
    const { numKvHeads, headDim, numLayers } = this.config;
    const empty = (): WireTensor => ({
      dtype: 'float32',
      dims: [batch, numKvHeads, 0, headDim],
      data: new Float32Array(0),
    });
    const tensors: Record<string, WireTensor> = {};
    for (let i = 0; i < numLayers; i++) {
      tensors[`${id}/${pastKey(i)}`] = empty();
      tensors[`${id}/${pastValue(i)}`] = empty();
    }
    await this.session.setState(this.stateId, tensors);
    return new KvCache(this, id, batch);
  }

  /** @internal one forward over new tokens; logits of each row's last position, [B·V]. */
  async advance(
    cache: KvCache,
    ids: number[][],
    mask: number[][],
    positions: number[][],
  ): Promise<Float32Array> {
    const reads: Record<string, string> = Object.fromEntries(this.weightNames.map((n) => [n, n]));
    const writes: Record<string, string> = {};
    for (let i = 0; i < this.config.numLayers; i++) {
      for (const [past, present] of [
        [pastKey(i), presentKey(i)],
        [pastValue(i), presentValue(i)],
      ] as const) {
        reads[past] = `${cache.id}/${past}`;
        writes[present] = `${cache.id}/${past}`;
      }
    }
    const out = await this.session.run(
      { input_ids: int64(ids), attention_mask: int64(mask), position_ids: int64(positions) },
      ['logits'],
      { state: this.stateId, reads, writes },
    );
    return out.logits!.data as Float32Array;
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
    await this.session.release();
  }
}

/** One generation's keys and values, living in the runner's worker. */
export class KvCache {
  constructor(
    private readonly runner: DecoderRunner,
    readonly id: string,
    readonly batch: number,
  ) {}

  /** Feeds new tokens (B×T, with the mask over past + new and their positions); returns last logits. */
  step(ids: number[][], mask: number[][], positions: number[][]): Promise<Float32Array> {
    return this.runner.advance(this, ids, mask, positions);
  }

  close(): Promise<void> {
    return this.runner.closeCache(this);
  }
}
