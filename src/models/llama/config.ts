/**
 * A Llama-family decoder's shape, read from (and written as) a Hugging Face `config.json`. Field
 * names and defaults are transformers' (LlamaConfig, Qwen2Config, Qwen3Config, MistralConfig), so a directory
 * moves between duel and Python unchanged. Anything duel would compute differently from
 * transformers (rope scaling, another activation) is refused by name rather than ignored.
 */
import { z } from 'zod';
import { DuelError } from '../../errors.js';

const MODEL_TYPES = ['llama', 'qwen2', 'qwen3', 'mistral'] as const;
export type ModelType = (typeof MODEL_TYPES)[number];

const positive = z.number().int().positive();
const tokenId = z.number().int().nonnegative();

const HfLlamaConfig = z
  .object({
    model_type: z.enum(MODEL_TYPES),
    vocab_size: positive,
    hidden_size: positive,
    intermediate_size: positive,
    num_hidden_layers: positive,
    num_attention_heads: positive,
    num_key_value_heads: positive.nullish(),
    head_dim: positive.nullish(),
    rms_norm_eps: z.number().positive().optional(),
    rope_theta: z.number().positive().optional(),
    max_position_embeddings: positive.optional(),
    tie_word_embeddings: z.boolean().optional(),
    attention_bias: z.boolean().optional(),
    hidden_act: z.literal('silu').optional(),
    rope_scaling: z.null().optional(),
    // transformers 5 writes the rotary settings here instead of rope_theta/rope_scaling.
    rope_parameters: z
      .looseObject({
        rope_type: z.literal('default', {
          message: "must be 'default' (duel implements no rope scaling)",
        }),
        rope_theta: z.number().positive().optional(),
      })
      .nullish(),
    sliding_window: positive.nullish(),
    use_sliding_window: z.boolean().optional(),
    initializer_range: z.number().positive().optional(),
    bos_token_id: tokenId.nullish(),
    eos_token_id: z.union([tokenId, z.array(tokenId).min(1)]).nullish(),
    pad_token_id: tokenId.nullish(),
  })
  // Other keys (architectures, torch_dtype, transformers_version, ...) describe the file, not the math.
  .loose();

export interface LlamaConfig {
  modelType: ModelType;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  maxPositions: number;
  tieWordEmbeddings: boolean;
  /** Bias on the q, k and v projections (Qwen2 always; Llama and Qwen3 when `attention_bias`). */
  qkvBias: boolean;
  /** RMSNorm over each head's queries and keys before rotary embeddings (Qwen3's q_norm/k_norm). */
  qkNorm: boolean;
  /** Keys further back than this are masked (Mistral); undefined: full causal attention. */
  slidingWindow: number | undefined;
  initializerRange: number;
  bosTokenId: number | undefined;
  eosTokenIds: number[];
  padTokenId: number | undefined;
}

/** Parses a config.json object; every problem names its key. */
export function parseLlamaConfig(json: unknown, source = 'config.json'): LlamaConfig {
  const parsed = HfLlamaConfig.safeParse(json);
  if (!parsed.success) {
    throw DuelError.invalidArgument(
      parsed.error.issues.map((i) => ({
        field: i.path.join('.') || '(root)',
        description: `${source}: ${i.message}`,
      })),
    );
  }
  const c = parsed.data;
  const numKvHeads = c.num_key_value_heads ?? c.num_attention_heads;
  // Qwen3Config's head_dim defaults to 128 rather than hidden/heads.
  const headDim = c.head_dim ?? (c.model_type === 'qwen3' ? 128 : c.hidden_size / c.num_attention_heads);
  const problems: { field: string; description: string }[] = [];
  if (!Number.isInteger(headDim))
    problems.push({
      field: 'num_attention_heads',
      description: `${source}: hidden_size ${c.hidden_size} is not divisible by num_attention_heads ${c.num_attention_heads}`,
    });
  if (c.num_attention_heads % numKvHeads !== 0)
    problems.push({
      field: 'num_key_value_heads',
      description: `${source}: num_attention_heads ${c.num_attention_heads} is not a multiple of num_key_value_heads ${numKvHeads}`,
    });
  if (headDim % 2 !== 0)
    problems.push({
      field: 'head_dim',
      description: `${source}: rotary embeddings need an even head_dim, got ${headDim}`,
    });
  if (c.model_type === 'qwen3' && c.use_sliding_window)
    problems.push({
      field: 'use_sliding_window',
      description: `${source}: Qwen3's per-layer sliding window (max_window_layers) is not implemented; only use_sliding_window false`,
    });
  if (
    c.rope_parameters?.rope_theta !== undefined &&
    c.rope_theta !== undefined &&
    c.rope_parameters.rope_theta !== c.rope_theta
  )
    problems.push({
      field: 'rope_parameters.rope_theta',
      description: `${source}: ${c.rope_parameters.rope_theta} disagrees with rope_theta ${c.rope_theta}`,
    });
  const ids = [c.bos_token_id, c.pad_token_id, ...[c.eos_token_id ?? []].flat()];
  for (const id of ids) {
    if (id != null && id >= c.vocab_size)
      problems.push({
        field: 'vocab_size',
        description: `${source}: token id ${id} is outside vocab_size ${c.vocab_size}`,
      });
  }
  if (problems.length > 0) throw DuelError.invalidArgument(problems);

  // Qwen2 and Qwen3 only honour sliding_window when use_sliding_window is set; Mistral always does.
  const window =
    (c.model_type === 'qwen2' || c.model_type === 'qwen3') && !c.use_sliding_window
      ? undefined
      : (c.sliding_window ?? undefined);
  return {
    modelType: c.model_type,
    vocabSize: c.vocab_size,
    hiddenSize: c.hidden_size,
    intermediateSize: c.intermediate_size,
    numLayers: c.num_hidden_layers,
    numHeads: c.num_attention_heads,
    numKvHeads,
    headDim,
    rmsNormEps: c.rms_norm_eps ?? 1e-6,
    ropeTheta: c.rope_theta ?? c.rope_parameters?.rope_theta ?? 10000,
    maxPositions: c.max_position_embeddings ?? 2048,
    tieWordEmbeddings: c.tie_word_embeddings ?? false,
    qkvBias: c.model_type === 'qwen2' ? true : (c.attention_bias ?? false),
    qkNorm: c.model_type === 'qwen3',
    slidingWindow: window,
    initializerRange: c.initializer_range ?? 0.02,
    bosTokenId: c.bos_token_id ?? undefined,
    eosTokenIds: [c.eos_token_id ?? []].flat(),
    padTokenId: c.pad_token_id ?? undefined,
  };
}

/** The config.json transformers writes for this model (Python loads it with AutoConfig). */
export function toHfConfig(cfg: LlamaConfig): Record<string, unknown> {
  const arch = {
    llama: 'LlamaForCausalLM',
    qwen2: 'Qwen2ForCausalLM',
    qwen3: 'Qwen3ForCausalLM',
    mistral: 'MistralForCausalLM',
  };
  return {
    architectures: [arch[cfg.modelType]],
    model_type: cfg.modelType,
    vocab_size: cfg.vocabSize,
    hidden_size: cfg.hiddenSize,
    intermediate_size: cfg.intermediateSize,
    num_hidden_layers: cfg.numLayers,
    num_attention_heads: cfg.numHeads,
    num_key_value_heads: cfg.numKvHeads,
    head_dim: cfg.headDim,
    hidden_act: 'silu',
    rms_norm_eps: cfg.rmsNormEps,
    rope_theta: cfg.ropeTheta,
    rope_scaling: null,
    max_position_embeddings: cfg.maxPositions,
    tie_word_embeddings: cfg.tieWordEmbeddings,
    ...(cfg.modelType === 'llama' || cfg.modelType === 'qwen3' ? { attention_bias: cfg.qkvBias } : {}),
    ...(cfg.modelType === 'qwen2' || cfg.modelType === 'qwen3'
      ? { use_sliding_window: cfg.slidingWindow !== undefined }
      : {}),
    sliding_window: cfg.slidingWindow ?? null,
    initializer_range: cfg.initializerRange,
    bos_token_id: cfg.bosTokenId ?? null,
    eos_token_id:
      cfg.eosTokenIds.length === 0
        ? null
        : cfg.eosTokenIds.length === 1
          ? cfg.eosTokenIds[0]
          : cfg.eosTokenIds,
    pad_token_id: cfg.padTokenId ?? null,
    torch_dtype: 'float32',
  };
}
