/**
 * The testbed's models, made from nothing: the word-level tokenizer of the game's vocabulary,
 * π_ref (a small Llama decoder SFT-trained on the mediocre corpus), the PairRM-style judge
 * trained on oracle-labelled pairs, and the oracle judge directory. Sizes are config keys
 * (`model.*`, `judge.*`, `data.*`) so the demo can shrink them in CI. A build is deterministic by
 * (game, build settings, seed), so a directory that already holds the build of the same key is
 * reused (built.json records the key): `duel testbed compare` builds once per game and seed.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import type { RoundMetrics } from '../algorithms/steps.js';
import { duelJudge, trainJudge, trainRewardModel } from '../algorithms/train-judge.js';
import { trainRound } from '../algorithms/train-round.js';
import type { Runtime } from '../engine/index.js';
import { DuelError } from '../errors.js';
import { type JudgeConfig, parseJudgeConfig } from '../models/judge/config.js';
import { initJudgeWeights } from '../models/judge/model.js';
import { saveJudgeDir } from '../models/judge/runner.js';
import { type LlamaConfig, parseLlamaConfig } from '../models/llama/config.js';
import { initLlamaWeights } from '../models/llama/weights.js';
import { saveModelDir } from '../models/model-dir.js';
import { parseRewardConfig, type RewardConfig } from '../models/reward/config.js';
import { initRewardWeights } from '../models/reward/model.js';
import { saveRewardDir } from '../models/reward/runner.js';
import { wordLevelTokenizer } from '../models/tokenizer.js';
import { judgePairs, sftCorpus } from './corpus.js';
import { type GameConfig, maxNewTokens, VOCAB } from './game.js';
import { saveOracleJudgeDir } from './oracle-judge.js';

export const buildSchema = z.strictObject({
  'model.hidden_size': z.number().int().min(8).default(64),
  'model.layers': z.number().int().min(1).default(2),
  'model.heads': z.number().int().min(1).default(4),
  'judge.hidden_size': z.number().int().min(8).default(64),
  /** pairwise: duel's PairRM-style judge; bt: a Bradley-Terry reward model (LlamaForSequenceClassification) of the same trunk. */
  'judge.kind': z.enum(['pairwise', 'bt']).default('pairwise'),
  'judge.layers': z.number().int().min(1).default(2),
  /** A learned embedding per segment of the pair sequence (the pairwise judge only). */
  'judge.segment_embeddings': z.boolean().default(true),
  'model.lr': z.number().positive().default(3e-3),
  'judge.lr': z.number().positive().default(2e-3),
  'data.sft_examples': z.number().int().min(16).default(6000),
  'data.sft_epochs': z.number().int().min(1).default(6),
  'data.judge_pairs': z.number().int().min(16).default(60000),
  'data.judge_epochs': z.number().int().min(1).default(4),
  /** drawn: each pair's winner drawn from P*; soft: P* itself as the label (corpus.ts). */
  'data.judge_labels': z.enum(['drawn', 'soft']).default('soft'),
});
export type BuildConfig = z.infer<typeof buildSchema>;

export interface Built {
  ref: string;
  judge: string;
  oracle: string;
  sft: { loss_first: number; loss_last: number; seconds: number };
  judgeTraining: { loss_first: number; loss_last: number; seconds: number };
}

export function policyConfig(g: GameConfig, b: BuildConfig): LlamaConfig {
  return parseLlamaConfig({
    model_type: 'llama',
    vocab_size: VOCAB.size,
    hidden_size: b['model.hidden_size'],
    intermediate_size: 2 * b['model.hidden_size'],
    num_hidden_layers: b['model.layers'],
    num_attention_heads: b['model.heads'],
    max_position_embeddings: 4 + g.max_targets + maxNewTokens(g),
    pad_token_id: VOCAB.pad,
    bos_token_id: VOCAB.bos,
    eos_token_id: VOCAB.eos,
  });
}

/** The Bradley-Terry judge: the pairwise judge's trunk, causal, read at the last token of x y. */
export function rewardConfig(g: GameConfig, b: BuildConfig): RewardConfig {
  return parseRewardConfig({
    architectures: ['LlamaForSequenceClassification'],
    model_type: 'llama',
    vocab_size: VOCAB.size,
    hidden_size: b['judge.hidden_size'],
    intermediate_size: 2 * b['judge.hidden_size'],
    num_hidden_layers: b['judge.layers'],
    num_attention_heads: 4,
    max_position_embeddings: 4 + g.max_targets + maxNewTokens(g),
    pad_token_id: VOCAB.pad,
    id2label: { 0: 'LABEL_0' },
  });
}

export function judgeConfig(g: GameConfig, b: BuildConfig): JudgeConfig {
  return parseJudgeConfig({
    model_type: 'duel_pairrm',
    encoder: {
      model_type: 'llama',
      vocab_size: VOCAB.size + 3,
      hidden_size: b['judge.hidden_size'],
      intermediate_size: 2 * b['judge.hidden_size'],
      num_hidden_layers: b['judge.layers'],
      num_attention_heads: 4,
      max_position_embeddings: 8 + g.max_targets + 2 * maxNewTokens(g),
      pad_token_id: VOCAB.pad,
    },
    source_token_id: VOCAB.size,
    candidate1_token_id: VOCAB.size + 1,
    candidate2_token_id: VOCAB.size + 2,
    segment_embeddings: b['judge.segment_embeddings'],
  });
}

const loop = (
  lr: number,
  epochs: number,
  seed: number,
  onStep: (s: number, t: number, loss: number) => void,
) => ({
  optimizer: { kind: 'adamw' as const, weightDecay: 0 },
  lr,
  epochs,
  batchSize: 64,
  gradClip: 1,
  schedule: 'cosine' as const,
  warmupSteps: 10,
  seed,
  onStep,
});

/** Told every training step of a build, by stage (π_ref's SFT, then the judge). */
export type BuildProgress = (stage: string, step: number, total: number, loss: number) => void;

/**
 * The learned judge of `judge.kind`, trained on `data.judge_pairs` pairs labelled from P*
 * (`data.judge_labels`) and saved as a judge directory at `dir`.
 */
export async function buildJudge(
  runtime: Runtime,
  g: GameConfig,
  b: BuildConfig,
  dir: string,
  seed: number,
  report: BuildProgress,
): Promise<{ metrics: RoundMetrics }> {
  const judgeTraining = {
    pairs: judgePairs(g, b['data.judge_pairs'], seed + 4, b['data.judge_labels']),
    ...loop(b['judge.lr'], b['data.judge_epochs'], seed + 5, (s, t, l) => report('judge', s, t, l)),
  };
  if (b['judge.kind'] === 'bt') {
    const rcfg = rewardConfig(g, b);
    const trained = await trainRewardModel(runtime, {
      config: rcfg,
      weights: initRewardWeights(rcfg, seed + 3),
      ...judgeTraining,
    });
    saveRewardDir(dir, rcfg, trained.weights);
    return trained;
  }
  const jcfg = judgeConfig(g, b);
  const trained = await trainJudge(runtime, {
    judge: duelJudge(jcfg),
    weights: initJudgeWeights(jcfg, seed + 3),
    ...judgeTraining,
  });
  saveJudgeDir(dir, jcfg, trained.weights);
  return trained;
}

/** Builds everything under `dir` (ref/, judge/, oracle/, tokenizer/). */
export async function buildTestbed(
  runtime: Runtime,
  g: GameConfig,
  b: BuildConfig,
  dir: string,
  seed: number,
  report: BuildProgress,
): Promise<Built & { reused: boolean }> {
  const key = JSON.stringify({ game: g, build: b, seed });
  const record = join(dir, 'built.json');
  if (existsSync(record)) {
    const saved = JSON.parse(readFileSync(record, 'utf8')) as { key: string; built: Built };
    if (saved.key === key) return { ...saved.built, reused: true };
  }
  const tokDir = join(dir, 'tokenizer');
  mkdirSync(tokDir, { recursive: true });
  const tok = wordLevelTokenizer([...VOCAB.words]);
  if (tok.ids.pad !== VOCAB.pad || tok.ids.bos !== VOCAB.bos || tok.ids.eos !== VOCAB.eos)
    throw DuelError.internal(
      'the word-level tokenizer no longer puts the specials where the game expects them',
    );
  writeFileSync(join(tokDir, 'tokenizer.json'), JSON.stringify(tok.tokenizerJson));
  writeFileSync(join(tokDir, 'tokenizer_config.json'), JSON.stringify(tok.tokenizerConfig));

  const cfg = policyConfig(g, b);
  const sft = await trainRound(runtime, {
    algo: 'sft',
    hparams: {},
    config: cfg,
    weights: initLlamaWeights(cfg, seed),
    records: sftCorpus(g, b['data.sft_examples'], seed + 1),
    ...loop(b['model.lr'], b['data.sft_epochs'], seed + 2, (s, t, l) => report('π_ref SFT', s, t, l)),
  });
  const ref = join(dir, 'ref');
  saveModelDir(ref, cfg, sft.weights, { tokenizerFrom: tokDir });

  const judge = join(dir, 'judge');
  const judged = await buildJudge(runtime, g, b, judge, seed, report);
  const oracle = join(dir, 'oracle');
  saveOracleJudgeDir(oracle, g);
  const summary = (m: { loss_first: number; loss_last: number; seconds: number }) => ({
    loss_first: m.loss_first,
    loss_last: m.loss_last,
    seconds: m.seconds,
  });
  const built: Built = {
    ref,
    judge,
    oracle,
    sft: summary(sft.metrics),
    judgeTraining: summary(judged.metrics),
  };
  writeFileSync(record, `${JSON.stringify({ key, built }, null, 2)}\n`);
  return { ...built, reused: false };
}
