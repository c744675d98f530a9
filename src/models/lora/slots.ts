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

/** The adapters a runner holds, by key: their state keys, reads and scale feeds. */
export class AdapterSlots {
  private readonly scales = new Map<string, number>();
  /** The graph inputs of an adapter's tensors. */
  readonly names: string[];

  constructor(
    cfg: LlamaConfig,
    readonly targets: readonly LoraTarget[],
    private readonly what: string,
  ) {
    this.names = loraParams(cfg, { rank: 1, alpha: 1, targets: [...targets], rslora: false, dropout: 0 }).map(
      (p) => p.name,
    );
  }

  private stateKey = (key: string, name: string) => `${key}/${name}`;

  /** The state tensors of `adapter` under `key` (refused when its targets are not this graph's). */
  add(key: string, adapter: Adapter): Record<string, WireTensor> {
    if (adapter.config.targets.join() !== this.targets.join())
      throw new Error(
        `this ${this.what} takes adapters on ${this.targets.join() || 'no layers'}, not on ${adapter.config.targets.join()}`,
      );
    const tensors: Record<string, WireTensor> = {};
    for (const [name, t] of Object.entries(adapter.tensors))
      tensors[this.stateKey(key, name)] = { dtype: 'float32', dims: t.dims, data: Float32Array.from(t.data) };
    this.scales.set(key, loraScale(adapter.config));
    return tensors;
  }

  /** Forgets `key`; returns its state keys to drop (none when it was not there). */
  remove(key: string): string[] {
    if (!this.scales.delete(key)) return [];
    return this.names.map((n) => this.stateKey(key, n));
  }

  has(key: string): boolean {
    return this.scales.has(key);
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
