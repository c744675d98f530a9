/**
 * A PairRM-style judge's config.json: a Llama-family encoder (the decoder's blocks without the
 * causal mask) under `encoder`, and the ids of the three marker tokens that open the source and
 * the two candidates in `<source> x <candidate1> y_i <candidate2> y_j`.
 */
import { z } from 'zod';
import { DuelError } from '../../errors.js';
import { type LlamaConfig, parseLlamaConfig, toHfConfig } from '../llama/config.js';

const JUDGE_MODEL_TYPE = 'duel_pairrm';

export interface JudgeConfig {
  encoder: LlamaConfig;
  sourceTokenId: number;
  candidate1TokenId: number;
  candidate2TokenId: number;
  /** A learned embedding per segment (source, candidate 1, candidate 2) added to each token's. */
  segmentEmbeddings: boolean;
}

const HfJudgeConfig = z.looseObject({
  model_type: z.literal(JUDGE_MODEL_TYPE),
  encoder: z.unknown(),
  source_token_id: z.number().int().nonnegative(),
  candidate1_token_id: z.number().int().nonnegative(),
  candidate2_token_id: z.number().int().nonnegative(),
  segment_embeddings: z.boolean().optional(),
});

export function parseJudgeConfig(json: unknown, source = 'config.json'): JudgeConfig {
  const parsed = HfJudgeConfig.safeParse(json);
  if (!parsed.success)
    throw DuelError.invalidArgument(
      parsed.error.issues.map((i) => ({
        field: i.path.join('.') || '(root)',
        description: `${source}: ${i.message}`,
      })),
    );
  const c = parsed.data;
  const encoder = parseLlamaConfig(c.encoder, `${source} (encoder)`);
  const markers = [c.source_token_id, c.candidate1_token_id, c.candidate2_token_id];
  if (new Set(markers).size !== 3)
    throw DuelError.invalidArgument([
      { field: 'source_token_id', description: `${source}: the three marker ids must differ` },
    ]);
  for (const m of markers)
    if (m >= encoder.vocabSize)
      throw DuelError.invalidArgument([
        { field: 'encoder.vocab_size', description: `${source}: marker id ${m} is outside the vocabulary` },
      ]);
  return {
    encoder,
    sourceTokenId: c.source_token_id,
    candidate1TokenId: c.candidate1_token_id,
    candidate2TokenId: c.candidate2_token_id,
    segmentEmbeddings: c.segment_embeddings ?? false,
  };
}

export function toHfJudgeConfig(cfg: JudgeConfig): Record<string, unknown> {
  return {
    architectures: ['DuelPairRM'],
    model_type: JUDGE_MODEL_TYPE,
    encoder: toHfConfig(cfg.encoder),
    source_token_id: cfg.sourceTokenId,
    candidate1_token_id: cfg.candidate1TokenId,
    candidate2_token_id: cfg.candidate2TokenId,
    ...(cfg.segmentEmbeddings ? { segment_embeddings: true } : {}),
  };
}
