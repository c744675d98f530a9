/**
 * `duel bench judge`: scorer throughput on real judge shapes, random weights, beside the machine's
 * MatMul ceiling measured in the same run and the FLOPs each forward needs (so the fraction of the
 * ceiling, and what a GPU of known peak would reach, follow):
 * - PairRM (llm-blender/PairRM-hf's shape: DeBERTa-v3-large, 24 layers, d 1024): pairs/s of one
 *   K×K comparison, K·(K−1) ordered pairs of a `source`-token prompt and `candidate`-token
 *   candidates;
 * - a Qwen3-0.6B-shaped Bradley-Terry reward model: rewards/s, K passes per comparison.
 */
import type { ComputeDtype, Provider } from '../src/engine/index.js';
import { Runtime } from '../src/engine/index.js';
import { parameterCount } from '../src/models/llama/weights.js';
import { type PairRMConfig, parsePairRMConfig } from '../src/models/pairrm/config.js';
import { initPairRMWeights, pairrmParams } from '../src/models/pairrm/model.js';
import { PairRMRunner } from '../src/models/pairrm/runner.js';
import { parseRewardConfig, type RewardConfig } from '../src/models/reward/config.js';
import { initRewardWeights, rewardParams } from '../src/models/reward/model.js';
import { RewardRunner } from '../src/models/reward/runner.js';
import { requireAdapter } from '../src/platform/gpu-adapter.js';
import { ceiling, timed } from './engine.js';

/** Qwen3-0.6B's shape (its config.json), as a one-label reward model. */
export const QWEN3_06B_RM: RewardConfig = parseRewardConfig({
  architectures: ['Qwen3ForSequenceClassification'],
  model_type: 'qwen3',
  vocab_size: 151936,
  hidden_size: 1024,
  intermediate_size: 3072,
  num_hidden_layers: 28,
  num_attention_heads: 16,
  num_key_value_heads: 8,
  head_dim: 128,
  max_position_embeddings: 40960,
  rope_theta: 1000000,
  tie_word_embeddings: true,
  pad_token_id: 151643,
  id2label: { 0: 'LABEL_0' },
});

/** llm-blender/PairRM-hf's config.json (microsoft/deberta-v3-large with PairRM's added tokens). */
export const PAIRRM_SHAPE: PairRMConfig = parsePairRMConfig({
  architectures: ['DebertaV2PairRM'],
  model_type: 'deberta-v2',
  vocab_size: 128005,
  hidden_size: 1024,
  num_hidden_layers: 24,
  num_attention_heads: 16,
  intermediate_size: 4096,
  hidden_act: 'gelu',
  max_position_embeddings: 512,
  type_vocab_size: 0,
  layer_norm_eps: 1e-7,
  relative_attention: true,
  max_relative_positions: -1,
  position_buckets: 256,
  pos_att_type: ['p2c', 'c2p'],
  share_att_key: true,
  norm_rel_ebd: 'layer_norm',
  position_biased_input: false,
  pad_token_id: 0,
  n_tasks: 1,
  cls_token_id: 1,
  sep_token_id: 2,
  source_prefix_id: 128001,
  cand1_prefix_id: 128002,
  cand2_prefix_id: 128003,
});

const SMALL_REWARD = parseRewardConfig({
  architectures: ['Qwen3ForSequenceClassification'],
  model_type: 'qwen3',
  vocab_size: 64,
  hidden_size: 32,
  intermediate_size: 64,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 8,
  pad_token_id: 0,
  id2label: { 0: 'LABEL_0' },
});
/** PairRM-large's layout (relative attention, shared keys, normed position embeddings), small. */
export const SMALL_PAIRRM_JSON = {
  architectures: ['DebertaV2PairRM'],
  model_type: 'deberta-v2',
  vocab_size: 64,
  hidden_size: 16,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  intermediate_size: 32,
  relative_attention: true,
  position_buckets: 8,
  max_relative_positions: 32,
  pos_att_type: 'p2c|c2p',
  share_att_key: true,
  norm_rel_ebd: 'layer_norm',
  position_biased_input: false,
  cls_token_id: 1,
  sep_token_id: 2,
  source_prefix_id: 61,
  cand1_prefix_id: 62,
  cand2_prefix_id: 63,
};
const SMALL_PAIRRM = parsePairRMConfig(SMALL_PAIRRM_JSON);

/** Small shapes of both judges: what the tests and `bench/gpu.sh --small` measure on a software adapter. */
export const SMALL_JUDGE_SHAPES = { pairrm: SMALL_PAIRRM, reward: SMALL_REWARD };

export interface JudgeBenchOptions {
  provider: Provider;
  /** What both judges compute in (Runtime.dtype). @default 'float32' */
  dtype?: ComputeDtype;
  /** Which judges (default both). */
  judges?: ('pairrm' | 'reward')[];
  /** Shapes to measure instead of the real ones (tests use small ones). */
  shapes?: { pairrm?: PairRMConfig; reward?: RewardConfig };
  k: number;
  source: number;
  candidate: number;
  reps: number;
  log: (line: string) => void;
}

export interface JudgeRow {
  judge: 'pairrm' | 'reward';
  /** What this judge computed in. */
  dtype: ComputeDtype;
  parameters: number;
  k: number;
  /** Forward passes one comparison runs: K·(K−1) ordered pairs, or K rewards. */
  passes: number;
  tokens_per_pass: number;
  /** One comparison of K candidates, median ms. */
  compare_ms: number;
  passes_per_s: number;
  gflop_per_pass: number;
  achieved_gflops: number;
  fraction_of_ceiling: number;
}

export interface JudgeBenchResult {
  provider: Provider;
  dtype: ComputeDtype;
  ceiling_gflops: number;
  rows: JudgeRow[];
}

/** 2 FLOPs per weight per token (embeddings are lookups), plus QKᵀ and PV over the whole square. */
function denseFlops(weights: number, layers: number, width: number, tokens: number) {
  return 2 * weights * tokens + 2 * 2 * layers * width * tokens * tokens;
}

function rewardFlops(cfg: RewardConfig, tokens: number): number {
  const b = cfg.backbone;
  const weights = parameterCount(rewardParams(cfg)) - b.vocabSize * b.hiddenSize;
  return denseFlops(weights, b.numLayers, b.numHeads * b.headDim, tokens);
}

/** PairRM adds c2p and p2c (each T × 2·span per head) and the shared key/query projections of the span. */
function pairrmFlops(cfg: PairRMConfig, tokens: number): number {
  const e = cfg.encoder;
  const width = e.numHeads * e.headDim;
  const weights = parameterCount(pairrmParams(cfg)) - e.vocabSize * e.hiddenSize - 2 * e.span * e.hiddenSize;
  const relative =
    e.numLayers * (2 * 2 * tokens * 2 * e.span * width + 2 * 2 * 2 * e.span * e.hiddenSize * width);
  return denseFlops(weights, e.numLayers, width, tokens) + relative;
}

export async function runJudgeBench(o: JudgeBenchOptions): Promise<JudgeBenchResult> {
  const adapter = o.provider === 'webgpu' ? await requireAdapter() : undefined;
  if (adapter) o.log(`adapter: ${adapter.vendor} ${adapter.device} (${adapter.description})`);
  const dtype = o.dtype ?? 'float32';
  const runtime = new Runtime({ workers: 1, provider: o.provider, dtype });
  const ids = (vocab: number, n: number, seed: number) =>
    Array.from({ length: n }, (_, i) => 3 + ((seed * 7919 + i * 31) % (vocab - 8)));
  const row = (
    judge: JudgeRow['judge'],
    computedIn: ComputeDtype,
    parameters: number,
    passes: number,
    tokens: number,
    flops: number,
    ms: number,
    ceilingGflops: number,
  ): JudgeRow => {
    const achieved = (passes * flops) / (ms / 1000) / 1e9;
    return {
      judge,
      dtype: computedIn,
      parameters,
      k: o.k,
      passes,
      tokens_per_pass: tokens,
      compare_ms: ms,
      passes_per_s: (passes * 1000) / ms,
      gflop_per_pass: flops / 1e9,
      achieved_gflops: achieved,
      fraction_of_ceiling: achieved / ceilingGflops,
    };
  };
  try {
    o.log(`ceiling: ONNX Runtime MatMul, float32, ${o.provider}`);
    const ceilingGflops = await ceiling(runtime, 1024, 5, o.log);
    const rows: JudgeRow[] = [];
    const judges = o.judges ?? ['pairrm', 'reward'];
    if (judges.includes('pairrm')) {
      const cfg = o.shapes?.pairrm ?? PAIRRM_SHAPE;
      const parameters = parameterCount(pairrmParams(cfg));
      o.log(`PairRM: ${(parameters / 1e6).toFixed(1)}M parameters, random weights`);
      const judge = await PairRMRunner.create(runtime, cfg, initPairRMWeights(cfg, 1));
      try {
        const vocab = cfg.encoder.vocabSize;
        const prompt = ids(vocab, o.source, 1);
        const candidates = Array.from({ length: o.k }, (_, j) => ids(vocab, o.candidate, j + 2));
        await judge.pairLogits([{ prompt, first: candidates[0]!, second: candidates[1]! }]); // warm-up
        const ms = await timed(`PairRM compare K=${o.k}`, o.reps, o.log, () =>
          judge.compare(prompt, candidates),
        );
        // tokenize_pair: [CLS] <src> x [SEP], then each candidate as [CLS] <cand> y [SEP].
        const tokens = o.source + 3 + 2 * (o.candidate + 3);
        rows.push(
          row(
            'pairrm',
            dtype,
            parameters,
            o.k * (o.k - 1),
            tokens,
            pairrmFlops(cfg, tokens),
            ms,
            ceilingGflops,
          ),
        );
      } finally {
        await judge.release();
      }
    }
    if (judges.includes('reward')) {
      const cfg = o.shapes?.reward ?? QWEN3_06B_RM;
      const parameters = parameterCount(rewardParams(cfg));
      o.log(`reward model: ${(parameters / 1e6).toFixed(1)}M parameters, random weights`);
      const rm = await RewardRunner.create(runtime, cfg, initRewardWeights(cfg, 1));
      try {
        const vocab = cfg.backbone.vocabSize;
        const prompt = ids(vocab, o.source, 1);
        const candidates = Array.from({ length: o.k }, (_, j) => ids(vocab, o.candidate, j + 2));
        await rm.rewards([{ prompt, completion: candidates[0]! }]); // warm-up: the first run plans the session
        const ms = await timed(`reward compare K=${o.k}`, o.reps, o.log, () =>
          rm.compare(prompt, candidates),
        );
        const tokens = o.source + o.candidate;
        rows.push(row('reward', dtype, parameters, o.k, tokens, rewardFlops(cfg, tokens), ms, ceilingGflops));
      } finally {
        await rm.release();
      }
    }
    return { provider: o.provider, dtype, ceiling_gflops: ceilingGflops, rows };
  } finally {
    await runtime.close();
  }
}
