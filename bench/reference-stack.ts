/**
 * The engine benchmark's reference transformer stack: d_model 256, 4 layers, 4 heads,
 * vocab 512, sequence 128, batch 16, SwiGLU width 4·d. duel runs it as its Llama decoder; the
 * TensorFlow.js peer writes the same computation by hand. Both train with next-token
 * cross-entropy and Adam (no weight decay), so a step is the same work on both sides.
 */
import { rng } from '../src/models/common/rng.js';
import { type LlamaConfig, parseLlamaConfig } from '../src/models/llama/config.js';

export const STACK = {
  dModel: 256,
  layers: 4,
  heads: 4,
  vocab: 512,
  seq: 128,
  batch: 16,
  ffn: 1024,
} as const;

export const stackConfig = (): LlamaConfig =>
  parseLlamaConfig({
    model_type: 'llama',
    vocab_size: STACK.vocab,
    hidden_size: STACK.dModel,
    intermediate_size: STACK.ffn,
    num_hidden_layers: STACK.layers,
    num_attention_heads: STACK.heads,
    max_position_embeddings: STACK.seq,
    rms_norm_eps: 1e-5,
  });

/** A fixed batch of token ids and next-token labels ([batch·seq] each, row-major). */
export function stackBatch(seed = 1): { ids: Int32Array; labels: Int32Array } {
  const next = rng(seed);
  const n = STACK.batch * (STACK.seq + 1);
  const stream = Int32Array.from({ length: n }, () => Math.floor(next() * STACK.vocab));
  const ids = new Int32Array(STACK.batch * STACK.seq);
  const labels = new Int32Array(STACK.batch * STACK.seq);
  for (let b = 0; b < STACK.batch; b++) {
    for (let t = 0; t < STACK.seq; t++) {
      ids[b * STACK.seq + t] = stream[b * (STACK.seq + 1) + t]!;
      labels[b * STACK.seq + t] = stream[b * (STACK.seq + 1) + t + 1]!;
    }
  }
  return { ids, labels };
}
