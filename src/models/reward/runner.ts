/**
 * A Bradley-Terry reward model in a Runtime worker: one forward pass per candidate gives its reward
 * r, and P(i ≻ j) = σ(r_i − r_j), so comparing K candidates costs K passes where a pairwise judge
 * needs K·(K−1). The K×K result has the pairwise judge's shape (its C is half the reward difference,
 * so σ(C_ij − C_ji) is the BT probability) and flows through the same scorer, best-of-n and
 * win-rate code.
 */
import { compile, Graph, type Runtime, T, type Tensor, WeightsSession } from '../../engine/index.js';
import { DuelError } from '../../errors.js';
import { weightDtype, weightsFor } from '../common/precision.js';
import type { PairInput } from '../judge/model.js';
import { fromLogits, orderByScores, type Preferences } from '../judge/runner.js';
import { fusedKernelsFor } from '../llama/decoder.js';
import type { HostTensor } from '../llama/weights.js';
import { readWeights, type SaveOptions, writeWeightsDir } from '../model-dir.js';
import { parseRewardConfig, type RewardConfig, toHfRewardConfig } from './config.js';
import { type RewardSequence, rewardBatch, rewardLogits, rewardParams } from './model.js';

export function saveRewardDir(
  dir: string,
  cfg: RewardConfig,
  weights: Record<string, HostTensor>,
  options: SaveOptions = {},
) {
  writeWeightsDir(dir, toHfRewardConfig(cfg), rewardParams(cfg), weights, options);
}

/** A reward model directory's weights (the LM head a converted checkpoint may carry is ignored). */
export function readRewardWeights(dir: string, cfg: RewardConfig) {
  return readWeights(
    dir,
    rewardParams(cfg),
    (n) => n === 'lm_head.weight',
    `a ${cfg.backbone.modelType} reward model`,
  );
}

export class RewardRunner {
  private constructor(
    readonly config: RewardConfig,
    private readonly model: WeightsSession,
  ) {}

  /** In the runtime's dtype: float16 holds the weights (but the norms') in half the memory. */
  static async create(runtime: Runtime, cfg: RewardConfig, weights: Record<string, HostTensor>) {
    const g = new Graph();
    const params = new Map<string, Tensor>();
    for (const spec of rewardParams(cfg))
      params.set(spec.name, g.input(spec.name, weightDtype(spec.name, runtime.dtype), spec.shape));
    const rewards = rewardLogits(cfg, (n) => params.get(n)!, {
      inputIds: g.input('input_ids', 'int64', ['B', 'T']),
      attentionMask: g.input('attention_mask', 'int64', ['B', 'T']),
      last: g.input('last', 'int64', ['B']),
      fusedKernels: fusedKernelsFor(runtime.provider),
    });
    const model = compile(g, { rewards: T.cast(rewards, 'float32') }, 'reward', {
      provider: runtime.provider,
    });
    return new RewardRunner(
      cfg,
      await WeightsSession.load(
        runtime,
        model,
        weightsFor(weights, runtime.dtype),
        [...params.keys()],
        'reward',
      ),
    );
  }

  static async fromDir(runtime: Runtime, dir: string, json: unknown, source: string) {
    const cfg = parseRewardConfig(json, source);
    return RewardRunner.create(runtime, cfg, readRewardWeights(dir, cfg));
  }

  /** The reward of each sequence, in batches of at most `maxBatch` (one at a time without a pad id). */
  async rewards(seqs: RewardSequence[], maxBatch = 32): Promise<number[]> {
    const step = this.config.backbone.padTokenId === undefined ? 1 : maxBatch;
    const out: number[] = [];
    for (let start = 0; start < seqs.length; start += step) {
      const b = rewardBatch(this.config, seqs.slice(start, start + step), start);
      const dims = [b.n, b.length];
      const res = await this.model.run(
        {
          input_ids: { dtype: 'int64', dims, data: b.inputIds },
          attention_mask: { dtype: 'int64', dims, data: b.attentionMask },
          last: { dtype: 'int64', dims: [b.n], data: b.last },
        },
        ['rewards'],
      );
      out.push(...Array.from(res.rewards!.data as Float32Array));
    }
    return out;
  }

  /** P(first ≻ second | prompt) = σ(r(x, first) − r(x, second)) of each pair. */
  async pairProbs(pairs: PairInput[]): Promise<number[]> {
    const r = await this.rewards([
      ...pairs.map((p) => ({ prompt: p.prompt, completion: p.first })),
      ...pairs.map((p) => ({ prompt: p.prompt, completion: p.second })),
    ]);
    return pairs.map((_, i) => 1 / (1 + Math.exp(-(r[i]! - r[pairs.length + i]!))));
  }

  /** The K×K matrices from K rewards: C_ij = (r_i − r_j)/2, so P_ij = σ(r_i − r_j). */
  async compare(prompt: number[], candidates: number[][]): Promise<Preferences> {
    const r = await this.rewards(candidates.map((completion) => ({ prompt, completion })));
    return fromLogits(r.map((ri, i) => r.map((rj, j) => (i === j ? 0 : (ri - rj) / 2))));
  }

  /** Candidates by reward, highest first; `judged` counts forward passes (K, whatever the method). */
  async rank(prompt: number[], candidates: number[][], _method: 'matrix' | 'bubble') {
    if (candidates.length === 0)
      throw DuelError.invalidArgument([{ field: 'candidates', description: 'is empty' }]);
    const scores = await this.rewards(candidates.map((completion) => ({ prompt, completion })));
    const order = orderByScores(scores);
    return { order, best: order[0]!, scores, judged: candidates.length };
  }

  release(): Promise<void> {
    return this.model.release();
  }
}
