/** Shared test models: weights far enough from their init that every parameter matters. */
import { fillNormal, rng } from '../../src/models/common/rng.js';
import { type JudgeConfig, parseJudgeConfig } from '../../src/models/judge/config.js';
import { type LlamaConfig, parseLlamaConfig } from '../../src/models/llama/config.js';
import { type HostTensor, initLlamaWeights, llamaParams } from '../../src/models/llama/weights.js';

/**
 * Weights with norms and biases off their init values, so every parameter matters. `scale`
 * multiplies the N(0, 0.02²) matrices: 10 makes sharp distributions, 2.5 milder ones.
 */
export function weights(
  cfg: LlamaConfig,
  seed: number,
  dtype: 'float32' | 'float64' = 'float64',
  scale = 10,
): Record<string, HostTensor> {
  const w = initLlamaWeights(cfg, seed, dtype);
  const next = rng(seed + 1);
  for (const spec of llamaParams(cfg)) {
    if (spec.init !== 'normal') fillNormal(w[spec.name]!.data, 0.3, next);
    const data = w[spec.name]!.data;
    for (let i = 0; i < data.length; i++)
      data[i] = spec.init === 'ones' ? 1 + data[i]! : spec.init === 'normal' ? scale * data[i]! : data[i]!;
  }
  return w;
}

/** A one-layer judge over a 16-token vocabulary with markers 13, 14, 15. */
export function tinyJudgeConfig(): JudgeConfig {
  return parseJudgeConfig({
    model_type: 'duel_pairrm',
    encoder: {
      model_type: 'llama',
      vocab_size: 16,
      hidden_size: 16,
      intermediate_size: 32,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      max_position_embeddings: 32,
    },
    source_token_id: 13,
    candidate1_token_id: 14,
    candidate2_token_id: 15,
  });
}

/** A one-layer decoder over a 12-token vocabulary (services and end-to-end tests). */
export function tinyLlamaConfig(padTokenId = 1): LlamaConfig {
  return parseLlamaConfig({
    model_type: 'llama',
    vocab_size: 12,
    hidden_size: 16,
    intermediate_size: 32,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    max_position_embeddings: 32,
    pad_token_id: padTokenId,
  });
}

/** The largest difference between two weight sets over the largest magnitude in `want`. */
export function maxRelativeDiff(
  got: Record<string, { data: ArrayLike<number> }>,
  want: Record<string, { data: ArrayLike<number> }>,
): number {
  let worst = 0;
  let scale = 0;
  for (const [k, t] of Object.entries(want))
    for (let i = 0; i < t.data.length; i++) {
      worst = Math.max(worst, Math.abs(t.data[i]! - got[k]!.data[i]!));
      scale = Math.max(scale, Math.abs(t.data[i]!));
    }
  return worst / scale;
}

/**
 * A Llama of realistic proportions for half-precision tests: grouped-query attention, an untied
 * head, a vocabulary of 96 (ids 93–95 free for a judge's markers).
 */
export const HALF_TEST_LLAMA = {
  model_type: 'llama',
  vocab_size: 96,
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 64,
  tie_word_embeddings: false,
  pad_token_id: 0,
};
