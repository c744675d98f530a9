/**
 * PairRM's config.json (llm-blender/PairRM-hf, class DebertaV2PairRM): a DeBERTa-v2 encoder's keys
 * plus the head's task count and the ids of the special tokens its input is built from. Ids the
 * directory's tokenizer.json knows are taken from there; otherwise from these keys.
 */
import { z } from 'zod';
import { DuelError } from '../../errors.js';
import { type DebertaConfig, parseDebertaConfig, toHfDebertaConfig } from '../deberta/config.js';

export const PAIRRM_ARCHITECTURE = 'DebertaV2PairRM';
/** LLM-Blender's tokenize_pair: the source keeps up to 1224 tokens, each candidate 412 (or the room left). */
export const PAIRRM_SOURCE_MAX_LENGTH = 1224;
export const PAIRRM_CANDIDATE_MAX_LENGTH = 412;

export interface PairRMConfig {
  encoder: DebertaConfig;
  nTasks: number;
  clsTokenId: number;
  sepTokenId: number;
  sourcePrefixId: number;
  cand1PrefixId: number;
  cand2PrefixId: number;
  sourceMaxLength: number;
  candidateMaxLength: number;
}

const id = z.number().int().nonnegative();
const HfPairRM = z.looseObject({
  n_tasks: z.number().int().positive().default(1),
  cls_token_id: id.optional(),
  sep_token_id: id.optional(),
  source_prefix_id: id.optional(),
  cand1_prefix_id: id.optional(),
  cand2_prefix_id: id.optional(),
  source_max_length: z.number().int().min(3).default(PAIRRM_SOURCE_MAX_LENGTH),
  candidate_max_length: z.number().int().min(3).default(PAIRRM_CANDIDATE_MAX_LENGTH),
});

/** Whether a config.json is PairRM's. */
export function isPairRMConfig(json: unknown): boolean {
  const arch = (json as { architectures?: unknown } | null)?.architectures;
  return Array.isArray(arch) && arch.includes(PAIRRM_ARCHITECTURE);
}

/** The special tokens by their PairRM names, as a tokenizer.json spells them. */
export const PAIRRM_TOKENS = {
  cls_token_id: '[CLS]',
  sep_token_id: '[SEP]',
  source_prefix_id: '<|source|>',
  cand1_prefix_id: '<|candidate1|>',
  cand2_prefix_id: '<|candidate2|>',
} as const;

/**
 * Reads PairRM's config; `tokenIds` gives the ids a tokenizer in the directory assigns to
 * PAIRRM_TOKENS (they win over config.json's, as they are what encodes text).
 */
export function parsePairRMConfig(
  json: unknown,
  source = 'config.json',
  tokenIds: Partial<Record<keyof typeof PAIRRM_TOKENS, number>> = {},
): PairRMConfig {
  const encoder = parseDebertaConfig(json, source);
  const parsed = HfPairRM.safeParse(json);
  if (!parsed.success)
    throw DuelError.invalidArgument(
      parsed.error.issues.map((i) => ({ field: i.path.join('.'), description: `${source}: ${i.message}` })),
    );
  const c = parsed.data;
  const problems: { field: string; description: string }[] = [];
  const ids = {} as Record<keyof typeof PAIRRM_TOKENS, number>;
  for (const key of Object.keys(PAIRRM_TOKENS) as (keyof typeof PAIRRM_TOKENS)[]) {
    const v = tokenIds[key] ?? c[key];
    if (v === undefined)
      problems.push({
        field: key,
        description: `${source}: not set, and no tokenizer.json or added_tokens.json beside it names ${PAIRRM_TOKENS[key]}`,
      });
    else if (v >= encoder.vocabSize)
      problems.push({
        field: key,
        description: `${source}: ${v} is outside vocab_size ${encoder.vocabSize}`,
      });
    else ids[key] = v;
  }
  if (problems.length) throw DuelError.invalidArgument(problems);
  return {
    encoder,
    nTasks: c.n_tasks,
    clsTokenId: ids.cls_token_id,
    sepTokenId: ids.sep_token_id,
    sourcePrefixId: ids.source_prefix_id,
    cand1PrefixId: ids.cand1_prefix_id,
    cand2PrefixId: ids.cand2_prefix_id,
    sourceMaxLength: c.source_max_length,
    candidateMaxLength: c.candidate_max_length,
  };
}

export function toHfPairRMConfig(cfg: PairRMConfig): Record<string, unknown> {
  return {
    architectures: [PAIRRM_ARCHITECTURE],
    ...toHfDebertaConfig(cfg.encoder),
    n_tasks: cfg.nTasks,
    cls_token_id: cfg.clsTokenId,
    sep_token_id: cfg.sepTokenId,
    source_prefix_id: cfg.sourcePrefixId,
    cand1_prefix_id: cfg.cand1PrefixId,
    cand2_prefix_id: cfg.cand2PrefixId,
    source_max_length: cfg.sourceMaxLength,
    candidate_max_length: cfg.candidateMaxLength,
  };
}
