/**
 * A DeBERTa-v2/v3 encoder's shape, read from a Hugging Face `config.json` with transformers'
 * keys and defaults (DebertaV2Config): disentangled attention over log-bucketed relative
 * positions. What duel would compute differently (a convolution layer, another activation, a
 * projected embedding) is refused by its key.
 */
import { z } from 'zod';
import { DuelError } from '../../errors.js';

const positive = z.number().int().positive();

const HfDebertaV2 = z.looseObject({
  model_type: z.literal('deberta-v2', { message: "must be 'deberta-v2'" }),
  vocab_size: positive,
  hidden_size: positive,
  num_hidden_layers: positive,
  num_attention_heads: positive,
  intermediate_size: positive,
  hidden_act: z
    .literal('gelu', { message: "must be 'gelu' (exact erf GELU; duel implements no other)" })
    .default('gelu'),
  max_position_embeddings: positive.default(512),
  type_vocab_size: z.literal(0, { message: 'must be 0 (duel feeds no token types)' }).default(0),
  layer_norm_eps: z.number().positive().default(1e-7),
  relative_attention: z.boolean().default(false),
  max_relative_positions: z.number().int().default(-1),
  position_buckets: z.number().int().default(-1),
  pos_att_type: z.union([z.string(), z.array(z.string())]).nullish(),
  share_att_key: z.boolean().default(false),
  norm_rel_ebd: z.string().default('none'),
  position_biased_input: z.boolean().default(true),
  attention_head_size: positive.optional(),
  pad_token_id: z.number().int().nonnegative().default(0),
  initializer_range: z.number().positive().default(0.02),
});

export interface DebertaConfig {
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  headDim: number;
  intermediateSize: number;
  maxPositions: number;
  layerNormEps: number;
  relativeAttention: boolean;
  /** Rows of the relative-position embedding are 2·span: position_buckets, else max_relative_positions. */
  span: number;
  /** > 0: relative positions are log-bucketed into this many buckets (transformers' make_log_bucket_position). */
  positionBuckets: number;
  maxRelativePositions: number;
  /** pos_att_type: they also set the score scale √(d·(1 + #types)), with or without relative attention. */
  c2p: boolean;
  p2c: boolean;
  shareAttKey: boolean;
  /** LayerNorm over the relative-position embeddings (norm_rel_ebd 'layer_norm'; it exists even unused). */
  normRelEmbeddings: boolean;
  /** Absolute position embeddings added to the input (DeBERTa-v3: false). */
  positionBiasedInput: boolean;
  padTokenId: number;
  initializerRange: number;
}

type Json = Record<string, unknown>;
const problem = (field: string, description: string) => ({ field, description });

export function parseDebertaConfig(json: unknown, source = 'config.json'): DebertaConfig {
  const parsed = HfDebertaV2.safeParse(json);
  if (!parsed.success)
    throw DuelError.invalidArgument(
      parsed.error.issues.map((i) => problem(i.path.join('.') || '(root)', `${source}: ${i.message}`)),
    );
  const c = parsed.data;
  const raw = json as Json;
  const problems: { field: string; description: string }[] = [];
  if (typeof raw.conv_kernel_size === 'number' && raw.conv_kernel_size > 0)
    problems.push(
      problem('conv_kernel_size', `${source}: is ${raw.conv_kernel_size}; duel implements no ConvLayer`),
    );
  if (typeof raw.embedding_size === 'number' && raw.embedding_size !== c.hidden_size)
    problems.push(
      problem('embedding_size', `${source}: differs from hidden_size; duel implements no embed_proj`),
    );
  if (typeof raw.z_steps === 'number' && raw.z_steps > 1)
    problems.push(problem('z_steps', `${source}: is ${raw.z_steps}; only 0 or 1`));
  // DebertaV2Config splits a string on '|'.
  const types = (
    typeof c.pos_att_type === 'string' ? c.pos_att_type.toLowerCase().split('|') : (c.pos_att_type ?? [])
  )
    .map((t) => t.trim())
    .filter((t) => t !== '');
  for (const t of types)
    if (t !== 'c2p' && t !== 'p2c')
      problems.push(problem('pos_att_type', `${source}: '${t}' is not c2p or p2c`));
  const norms = c.norm_rel_ebd
    .toLowerCase()
    .split('|')
    .map((s) => s.trim());
  for (const n of norms)
    if (n !== 'none' && n !== 'layer_norm')
      problems.push(problem('norm_rel_ebd', `${source}: '${n}' is not none or layer_norm`));
  const headDim = c.attention_head_size ?? c.hidden_size / c.num_attention_heads;
  if (!Number.isInteger(headDim))
    problems.push(
      problem(
        'num_attention_heads',
        `${source}: hidden_size ${c.hidden_size} is not divisible by ${c.num_attention_heads} heads`,
      ),
    );
  if (problems.length) throw DuelError.invalidArgument(problems);
  const maxRelative = c.max_relative_positions < 1 ? c.max_position_embeddings : c.max_relative_positions;
  return {
    vocabSize: c.vocab_size,
    hiddenSize: c.hidden_size,
    numLayers: c.num_hidden_layers,
    numHeads: c.num_attention_heads,
    headDim,
    intermediateSize: c.intermediate_size,
    maxPositions: c.max_position_embeddings,
    layerNormEps: c.layer_norm_eps,
    relativeAttention: c.relative_attention,
    span: c.position_buckets > 0 ? c.position_buckets : maxRelative,
    positionBuckets: c.position_buckets,
    maxRelativePositions: maxRelative,
    c2p: types.includes('c2p'),
    p2c: types.includes('p2c'),
    shareAttKey: c.share_att_key,
    normRelEmbeddings: norms.includes('layer_norm'),
    positionBiasedInput: c.position_biased_input,
    padTokenId: c.pad_token_id,
    initializerRange: c.initializer_range,
  };
}

/** The config.json keys transformers reads for `cfg` (DebertaV2Config). */
export function toHfDebertaConfig(cfg: DebertaConfig): Record<string, unknown> {
  return {
    model_type: 'deberta-v2',
    vocab_size: cfg.vocabSize,
    hidden_size: cfg.hiddenSize,
    num_hidden_layers: cfg.numLayers,
    num_attention_heads: cfg.numHeads,
    ...(cfg.headDim !== cfg.hiddenSize / cfg.numHeads ? { attention_head_size: cfg.headDim } : {}),
    intermediate_size: cfg.intermediateSize,
    hidden_act: 'gelu',
    max_position_embeddings: cfg.maxPositions,
    type_vocab_size: 0,
    layer_norm_eps: cfg.layerNormEps,
    relative_attention: cfg.relativeAttention,
    max_relative_positions: cfg.maxRelativePositions,
    position_buckets: cfg.positionBuckets,
    pos_att_type: [...(cfg.p2c ? ['p2c'] : []), ...(cfg.c2p ? ['c2p'] : [])],
    share_att_key: cfg.shareAttKey,
    norm_rel_ebd: cfg.normRelEmbeddings ? 'layer_norm' : 'none',
    position_biased_input: cfg.positionBiasedInput,
    pad_token_id: cfg.padTokenId,
    initializer_range: cfg.initializerRange,
  };
}
