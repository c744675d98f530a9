/**
 * Completion log-probs of a loaded decoder, batched: what `duel model logprobs`, the trainer's
 * reference log-probs and the estimators (KL to π_ref) read. Weights live in the worker's state.
 */
import { compile, Graph, type Runtime, type Session, type Tensor } from '../../engine/index.js';
import { type CompletionRecord, completionBatch } from '../batch.js';
import { type Adapter, loraParams } from '../lora/adapter.js';
import { loraScale } from '../lora/config.js';
import type { LlamaConfig } from './config.js';
import { sequenceLogprobs } from './logprobs.js';
import { type HostTensor, llamaParams } from './weights.js';

let counter = 0;

export interface CompletionLogprobs {
  /** Σ log π(y_t | x, y_<t) over the completion. */
  summed: number;
  /** One per completion token. */
  perToken: number[];
}

export class LogprobRunner {
  private constructor(
    readonly config: LlamaConfig,
    private readonly session: Session,
    private readonly stateId: string,
    private readonly padId: number,
    private readonly paramNames: string[],
  ) {}

  /** With `adapter`: log-probs of base + adapter, the adapter's tensors beside the weights. */
  static async create(
    runtime: Runtime,
    config: LlamaConfig,
    weights: Record<string, HostTensor>,
    adapter?: Adapter,
  ) {
    const g = new Graph();
    const params = new Map<string, Tensor>();
    const specs = [...llamaParams(config), ...(adapter ? loraParams(config, adapter.config) : [])];
    for (const spec of specs) params.set(spec.name, g.input(spec.name, 'float32', spec.shape));
    const { perToken, summed } = sequenceLogprobs(config, (n) => params.get(n)!, {
      inputIds: g.input('input_ids', 'int64', ['B', 'T']),
      attentionMask: g.input('attention_mask', 'int64', ['B', 'T']),
      targets: g.input('targets', 'int64', ['B', 'T']),
      targetMask: g.input('target_mask', 'float32', ['B', 'T']),
      ...(adapter
        ? { lora: { scale: loraScale(adapter.config), targets: new Set<string>(adapter.config.targets) } }
        : {}),
    });
    const session = await runtime.load(
      compile(g, { per_token: perToken, summed }, 'logprobs', { provider: runtime.provider }),
    );
    const stateId = `logprobs-${process.pid}-${counter++}`;
    await session.setState(stateId, { ...weights, ...adapter?.tensors });
    return new LogprobRunner(
      config,
      session,
      stateId,
      config.padTokenId ?? 0,
      specs.map((s) => s.name),
    );
  }

  async logprobs(records: CompletionRecord[], maxBatch = 32): Promise<CompletionLogprobs[]> {
    const out: CompletionLogprobs[] = [];
    for (let start = 0; start < records.length; start += maxBatch) {
      const chunk = records.slice(start, start + maxBatch);
      const b = completionBatch(chunk, this.padId, this.config.vocabSize);
      const dims = [b.batch, b.length];
      const res = await this.session.run(
        {
          input_ids: { dtype: 'int64', dims, data: b.inputIds },
          attention_mask: { dtype: 'int64', dims, data: b.attentionMask },
          targets: { dtype: 'int64', dims, data: b.targets },
          target_mask: { dtype: 'float32', dims, data: b.targetMask },
        },
        ['per_token', 'summed'],
        {
          state: this.stateId,
          reads: Object.fromEntries(this.paramNames.map((n) => [n, n])),
          writes: {},
        },
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

  async release(): Promise<void> {
    await this.session.dropState(this.stateId);
    await this.session.release();
  }
}
