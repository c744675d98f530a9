/**
 * `duel bench judge`: scorer throughput on real judge shapes, random weights. Today the
 * Bradley-Terry half: rewards/s of a Qwen3-0.6B-shaped `Qwen3ForSequenceClassification` (K
 * candidates of `candidate` tokens after a `source`-token prompt, one pass each), beside the
 * machine's MatMul ceiling measured in the same run and the FLOPs a pass needs, so the fraction of
 * the ceiling, and what a GPU of known peak would reach, follow. PairRM's pairs/s joins once the
 * DeBERTa-v2 encoder exists.
 */
import type { Provider } from '../src/engine/index.js';
import { Runtime } from '../src/engine/index.js';
import { parameterCount } from '../src/models/llama/weights.js';
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

export interface JudgeBenchOptions {
  provider: Provider;
  /** The reward model's shape (default Qwen3-0.6B's); `name` labels it. */
  model?: { name: string; config: RewardConfig };
  k: number;
  source: number;
  candidate: number;
  reps: number;
  log: (line: string) => void;
}

export interface JudgeBenchResult {
  provider: Provider;
  ceiling_gflops: number;
  reward_model: {
    shape: string;
    parameters: number;
    k: number;
    tokens_per_sequence: number;
    /** One comparison of K candidates (K passes), median ms. */
    compare_ms: number;
    rewards_per_s: number;
    /** 2 · (parameters − embedding) · tokens + attention, per pass. */
    gflop_per_pass: number;
    achieved_gflops: number;
    fraction_of_ceiling: number;
  };
}

/** Forward FLOPs of one sequence: 2 per weight per token (the embedding is a lookup) plus attention. */
function passFlops(cfg: RewardConfig, tokens: number): number {
  const b = cfg.backbone;
  const weights = parameterCount(rewardParams(cfg)) - b.vocabSize * b.hiddenSize;
  const attention = 2 * 2 * b.numLayers * b.numHeads * b.headDim * tokens * tokens; // QKᵀ and PV, causal counted whole
  return 2 * weights * tokens + attention;
}

export async function runJudgeBench(o: JudgeBenchOptions): Promise<JudgeBenchResult> {
  const adapter = o.provider === 'webgpu' ? await requireAdapter() : undefined;
  if (adapter) o.log(`adapter: ${adapter.vendor} ${adapter.device} (${adapter.description})`);
  const runtime = new Runtime({ workers: 1, provider: o.provider });
  try {
    o.log(`ceiling: ONNX Runtime MatMul, float32, ${o.provider}`);
    const ceilingGflops = await ceiling(runtime, 1024, 5, o.log);
    const { name, config: cfg } = o.model ?? { name: 'qwen3-0.6b', config: QWEN3_06B_RM };
    const parameters = parameterCount(rewardParams(cfg));
    o.log(`reward model: ${name} shape, ${(parameters / 1e6).toFixed(1)}M parameters, random weights`);
    const rm = await RewardRunner.create(runtime, cfg, initRewardWeights(cfg, 1));
    try {
      const vocab = cfg.backbone.vocabSize - 10;
      const ids = (n: number, seed: number) =>
        Array.from({ length: n }, (_, i) => 10 + ((seed * 7919 + i * 31) % vocab));
      const prompt = ids(o.source, 1);
      const candidates = Array.from({ length: o.k }, (_, j) => ids(o.candidate, j + 2));
      await rm.rewards([{ prompt, completion: candidates[0]! }]); // warm-up: the first run plans the session
      const ms = await timed(`compare K=${o.k}`, o.reps, o.log, () => rm.compare(prompt, candidates));
      const tokens = o.source + o.candidate;
      const flops = passFlops(cfg, tokens);
      const achieved = (o.k * flops) / (ms / 1000) / 1e9;
      return {
        provider: o.provider,
        ceiling_gflops: ceilingGflops,
        reward_model: {
          shape: name,
          parameters,
          k: o.k,
          tokens_per_sequence: tokens,
          compare_ms: ms,
          rewards_per_s: (o.k * 1000) / ms,
          gflop_per_pass: flops / 1e9,
          achieved_gflops: achieved,
          fraction_of_ceiling: achieved / ceilingGflops,
        },
      };
    } finally {
      await rm.release();
    }
  } finally {
    await runtime.close();
  }
}
