/**
 * The engine benchmark's transformer stacks. The reference one: d_model 256, 4 layers, 4 heads,
 * vocab 512, sequence 128, batch 16, SwiGLU width 4·d. duel runs it as its Llama decoder; the
 * TensorFlow.js peer writes the same computation by hand. Both train with next-token
 * cross-entropy and Adam (no weight decay), so a step is the same work on both sides. For a GPU,
 * a SmolLM-135M-shaped one (random weights: the shape is what costs), and a tiny one for
 * software adapters, where the others take minutes a step.
 */
import type { Graph, Tensor, TraceTarget, WireTensor } from '../src/engine/index.js';
import { T } from '../src/engine/index.js';
import { rng } from '../src/models/common/rng.js';
import { type LlamaConfig, parseLlamaConfig } from '../src/models/llama/config.js';
import { fusedKernelsFor, llamaForward } from '../src/models/llama/decoder.js';
import { tokenLogprobs } from '../src/models/llama/logprobs.js';
import { llamaParams } from '../src/models/llama/weights.js';

export interface StackShape {
  dModel: number;
  layers: number;
  heads: number;
  /** Grouped-query attention: key/value heads (default: `heads`). */
  kvHeads?: number;
  vocab: number;
  seq: number;
  batch: number;
  ffn: number;
}

export const STACK = {
  dModel: 256,
  layers: 4,
  heads: 4,
  vocab: 512,
  seq: 128,
  batch: 16,
  ffn: 1024,
} as const;

export const STACKS: Record<string, StackShape> = {
  stack: STACK,
  /** HuggingFaceTB/SmolLM-135M's shape (tied embeddings), training at sequence 512, batch 8. */
  'smollm-135m': {
    dModel: 576,
    layers: 30,
    heads: 9,
    kvHeads: 3,
    vocab: 49152,
    seq: 512,
    batch: 8,
    ffn: 1536,
  },
  tiny: { dModel: 64, layers: 2, heads: 4, vocab: 128, seq: 32, batch: 4, ffn: 128 },
};

export const stackConfig = (s: StackShape = STACK): LlamaConfig =>
  parseLlamaConfig({
    model_type: 'llama',
    vocab_size: s.vocab,
    hidden_size: s.dModel,
    intermediate_size: s.ffn,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads ?? s.heads,
    max_position_embeddings: s.seq,
    rms_norm_eps: 1e-5,
    tie_word_embeddings: s !== STACK,
  });

/** A fixed batch of token ids and next-token labels ([batch·seq] each, row-major). */
export function stackBatch(seed = 1, s: StackShape = STACK): { ids: Int32Array; labels: Int32Array } {
  const next = rng(seed);
  const n = s.batch * (s.seq + 1);
  const stream = Int32Array.from({ length: n }, () => Math.floor(next() * s.vocab));
  const ids = new Int32Array(s.batch * s.seq);
  const labels = new Int32Array(s.batch * s.seq);
  for (let b = 0; b < s.batch; b++) {
    for (let t = 0; t < s.seq; t++) {
      ids[b * s.seq + t] = stream[b * (s.seq + 1) + t]!;
      labels[b * s.seq + t] = stream[b * (s.seq + 1) + t + 1]!;
    }
  }
  return { ids, labels };
}

/** stackBatch as the training step's feeds. */
export function stackFeeds(s: StackShape = STACK, seed = 1): Record<string, WireTensor> {
  const { ids, labels } = stackBatch(seed, s);
  const dims = [s.batch, s.seq];
  return {
    input_ids: { dtype: 'int64', dims, data: BigInt64Array.from(ids, BigInt) },
    labels: { dtype: 'int64', dims, data: BigInt64Array.from(labels, BigInt) },
  };
}

/** The training program: the Llama decoder with next-token cross-entropy. */
export function stackProgram(cfg: LlamaConfig) {
  return {
    dtype: 'float32' as const,
    build(
      graph: Graph,
      param: (name: string, shape: number[]) => Tensor,
      _frozen: unknown,
      target: TraceTarget,
    ) {
      const ids = graph.input('input_ids', 'int64', ['B', 'T']);
      const labels = graph.input('labels', 'int64', ['B', 'T']);
      const shapes = new Map(llamaParams(cfg).map((p) => [p.name, p.shape]));
      const cache = new Map<string, Tensor>();
      const w = (name: string) => {
        if (!cache.has(name)) cache.set(name, param(name, shapes.get(name)!));
        return cache.get(name)!;
      };
      const { logits } = llamaForward(cfg, w, {
        inputIds: ids,
        fusedKernels: fusedKernelsFor(target.provider),
      });
      return T.neg(T.mean(tokenLogprobs(logits, labels)));
    },
  };
}
