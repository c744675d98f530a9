/**
 * A Bradley-Terry reward model's config.json as transformers writes a Llama-family
 * `*ForSequenceClassification` with one label: the backbone's keys (read by parseLlamaConfig, so
 * the same refusals apply) plus `architectures` naming the head and `id2label` holding one label.
 * Skywork-Reward-V2 and most open reward models are such directories.
 */
import { DuelError } from '../../errors.js';
import { type LlamaConfig, type ModelType, parseLlamaConfig, toHfConfig } from '../llama/config.js';

/** The sequence-classification heads duel reads, by transformers' class name, and their model_type. */
export const REWARD_ARCHITECTURES: Record<string, ModelType> = {
  LlamaForSequenceClassification: 'llama',
  Qwen2ForSequenceClassification: 'qwen2',
  Qwen3ForSequenceClassification: 'qwen3',
  MistralForSequenceClassification: 'mistral',
};

export interface RewardConfig {
  backbone: LlamaConfig;
}

type Json = Record<string, unknown>;

/** Whether a config.json describes a sequence-classification model (of any family). */
export function isRewardConfig(json: unknown): boolean {
  const arch = (json as Json | null)?.architectures;
  return Array.isArray(arch) && typeof arch[0] === 'string' && arch[0].endsWith('ForSequenceClassification');
}

/** Reads a reward model's config.json; every problem names its key. */
export function parseRewardConfig(json: unknown, source = 'config.json'): RewardConfig {
  const c = json as Json;
  const arch = (c.architectures as string[] | undefined)?.[0] ?? '(none)';
  const family = REWARD_ARCHITECTURES[arch];
  if (!family)
    throw DuelError.invalidArgument([
      {
        field: 'architectures',
        description: `${source}: '${arch}' is not a reward model duel reads (${Object.keys(REWARD_ARCHITECTURES).join(', ')})`,
      },
    ]);
  if (c.model_type !== family)
    throw DuelError.invalidArgument([
      {
        field: 'model_type',
        description: `${source}: ${arch} has model_type '${family}', not '${String(c.model_type)}'`,
      },
    ]);
  // transformers' PretrainedConfig: num_labels comes from id2label, and is 2 when neither is given.
  const labels =
    typeof c.num_labels === 'number'
      ? c.num_labels
      : c.id2label && typeof c.id2label === 'object'
        ? Object.keys(c.id2label).length
        : 2;
  if (labels !== 1)
    throw DuelError.invalidArgument([
      {
        field: 'id2label',
        description: `${source}: the model has ${labels} labels; a Bradley-Terry reward model has one (a scalar reward)`,
      },
    ]);
  return { backbone: parseLlamaConfig(json, source) };
}

export function toHfRewardConfig(cfg: RewardConfig): Record<string, unknown> {
  const arch = Object.entries(REWARD_ARCHITECTURES).find(([, t]) => t === cfg.backbone.modelType)![0];
  return {
    ...toHfConfig(cfg.backbone),
    architectures: [arch],
    id2label: { 0: 'LABEL_0' },
    label2id: { LABEL_0: 0 },
  };
}
