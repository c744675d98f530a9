/**
 * Adapters as graph inputs: a graph declares, for one target set, each module's A [R, in] and
 * B [out, R] (R, the rank, symbolic) and the scalar `lora_scale`; a runner keeps any number of
 * adapters in its worker state under keys, and a run reads one of them. This is what lets one
 * compiled graph serve every adapter of a target set (DecoderRunner, LogprobRunner).
 */
import type { Graph, Tensor, WireTensor } from '../../engine/index.js';
import type { LlamaConfig } from '../llama/config.js';
import { type Adapter, loraParams } from './adapter.js';
import { type LoraTarget, loraScale } from './config.js';

/** Declares the adapter inputs of `targets` in `g`: their tensors by HF name, and the scale. */
export function declareAdapterInputs(g: Graph, cfg: LlamaConfig, targets: readonly LoraTarget[]) {
  const tensors = new Map<string, Tensor>();
  for (const spec of loraParams(cfg, { rank: 1, alpha: 1, targets: [...targets], rslora: false, dropout: 0 }))
    tensors.set(
      spec.name,
      g.input(
        spec.name,
        'float32',
        spec.name.endsWith('lora_A.weight') ? ['R', spec.shape[1]!] : [spec.shape[0]!, 'R'],
      ),
    );
  return {
    tensors,
    lora: { scale: g.input('lora_scale', 'float32', []), targets: new Set<string>(targets) },
  };
}

/** Where a runner keeps the adapters' tensors: its worker state. */
export interface AdapterStore {
  put(tensors: Record<string, WireTensor>): Promise<void>;
  drop(keys: string[]): Promise<void>;
}

/**
 * The adapters a runner holds, by key: their tensors in its state, their reads and scale feeds.
 * A runner whose graph takes no adapter has slots on no targets, which refuse every adapter; the
 * runners' setAdapter/dropAdapter/withAdapter are these, so each says the same thing the same way.
 */
export class AdapterSlots {
  private readonly scales = new Map<string, number>();
  /** The graph inputs of an adapter's tensors. */
  readonly names: string[];

  constructor(
    cfg: LlamaConfig,
    /** The targets the graph takes adapters on; undefined when it takes none. */
    readonly targets: readonly LoraTarget[] | undefined,
    private readonly what: string,
    private readonly store: AdapterStore,
  ) {
    this.names = targets
      ? loraParams(cfg, { rank: 1, alpha: 1, targets: [...targets], rslora: false, dropout: 0 }).map(
          (p) => p.name,
        )
      : [];
  }

  /** Whether the graph reads an adapter on every run. */
  get taken(): boolean {
    return this.targets !== undefined;
  }

  private stateKey = (key: string, name: string) => `${key}/${name}`;

  /** Puts `adapter` in the state under `key` (refused when its targets are not this graph's). */
  async set(key: string, adapter: Adapter): Promise<void> {
    if (!this.targets) throw new Error(`this ${this.what} takes no adapter`);
    if (adapter.config.targets.join() !== this.targets.join())
      throw new Error(
        `this ${this.what} takes adapters on ${this.targets.join() || 'no layers'}, not on ${adapter.config.targets.join()}`,
      );
    const tensors: Record<string, WireTensor> = {};
    for (const [name, t] of Object.entries(adapter.tensors))
      tensors[this.stateKey(key, name)] = { dtype: 'float32', dims: t.dims, data: Float32Array.from(t.data) };
    await this.store.put(tensors);
    this.scales.set(key, loraScale(adapter.config));
  }

  /** Forgets `key` and drops its tensors (nothing when it was not there). */
  async delete(key: string): Promise<void> {
    if (!this.scales.delete(key)) return;
    await this.store.drop(this.names.map((n) => this.stateKey(key, n)));
  }

  /** Refuses a key that holds no adapter: what `withAdapter` checks before it hands out a view. */
  require(key: string): void {
    if (!this.scales.has(key)) throw new Error(`no adapter '${key}' in this ${this.what}`);
  }

  /** The state reads and the scale feed of a run with the adapter under `key`. */
  run(key: string): { reads: Record<string, string>; feeds: Record<string, WireTensor> } {
    const scale = this.scales.get(key);
    if (scale === undefined) throw new Error(`no adapter '${key}' in this ${this.what}`);
    return {
      reads: Object.fromEntries(this.names.map((n) => [n, this.stateKey(key, n)])),
      feeds: { lora_scale: { dtype: 'float32', dims: [], data: Float32Array.of(scale) } },
    };
  }
}
