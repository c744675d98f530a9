/**
 * PairRM in a Runtime worker: ordered-pair logits in batches (the relative-position indices fed
 * per batch length), and the K×K comparison and ranking every pairwise judge gives.
 */

import { join } from 'node:path';
import {
  type ComputeDtype,
  compile,
  Graph,
  type Runtime,
  T,
  type Tensor,
  WeightsSession,
} from '../../engine/index.js';
import { weightDtype, weightsFor } from '../common/precision.js';
import type { PairInput } from '../judge/model.js';
import {
  compareByPairs,
  type PairLogits,
  type Preferences,
  probsByPairs,
  rankByPairs,
} from '../judge/runner.js';
import { fusedKernelsFor } from '../llama/decoder.js';
import type { HostTensor } from '../llama/weights.js';
import { readWeights, type SaveOptions, writeWeightsDir } from '../model-dir.js';
import { addedTokensOf } from '../sentencepiece.js';
import { TextTokenizer } from '../tokenizer.js';
import { PAIRRM_TOKENS, type PairRMConfig, parsePairRMConfig, toHfPairRMConfig } from './config.js';
import { pairrmBatch, pairrmLogits, pairrmParams } from './model.js';

/**
 * PairRM's config from its directory: special-token ids from its tokenizer.json where it has one,
 * else from the added tokens published beside its spm.model.
 */
export function readPairRMConfig(dir: string, json: unknown): PairRMConfig {
  const tokenizer = TextTokenizer.tryFromDir(dir);
  const added = tokenizer ? undefined : addedTokensOf(dir);
  const ids = Object.fromEntries(
    Object.entries(PAIRRM_TOKENS).map(([key, token]) => [
      key,
      tokenizer ? tokenizer.tokenId(token) : added!.get(token),
    ]),
  );
  return parsePairRMConfig(json, join(dir, 'config.json'), ids);
}

/** PairRM's weights from its directory (model.safetensors, or pytorch_model.bin as published). */
export function readPairRMWeights(dir: string, cfg: PairRMConfig): Record<string, HostTensor> {
  // transformers keeps position_ids as a buffer in older checkpoints; it holds no weights.
  return readWeights(dir, pairrmParams(cfg), (n) => n.endsWith('embeddings.position_ids'), 'a PairRM judge');
}

export function savePairRMDir(
  dir: string,
  cfg: PairRMConfig,
  weights: Record<string, HostTensor>,
  options: SaveOptions = {},
) {
  writeWeightsDir(dir, toHfPairRMConfig(cfg), pairrmParams(cfg), weights, options);
}

/**
 * The graph: input_ids, attention_mask, markers and (with relative attention) c2p/p2c → logits [B]
 * (float32). It computes in `dtype`: float16 takes the weights (but the norms') in half
 * (precision.ts). Not float64: ONNX Runtime's CPU provider has no float64 Erf (the exact GELU).
 */
export function pairrmGraph(cfg: PairRMConfig, fusedKernels = false, dtype: ComputeDtype = 'float32') {
  const g = new Graph();
  const params = new Map<string, Tensor>();
  for (const spec of pairrmParams(cfg))
    params.set(spec.name, g.input(spec.name, weightDtype(spec.name, dtype), spec.shape));
  const rel = cfg.encoder.relativeAttention;
  const logits = pairrmLogits(cfg, (n) => params.get(n)!, {
    inputIds: g.input('input_ids', 'int64', ['B', 'T']),
    attentionMask: g.input('attention_mask', 'int64', ['B', 'T']),
    markers: g.input('markers', 'int64', ['B', 3]),
    ...(rel
      ? {
          c2pIndex: g.input('c2p_index', 'int64', ['T', 'T']),
          p2cIndex: g.input('p2c_index', 'int64', ['T', 'T']),
        }
      : {}),
    fusedKernels,
  });
  return { graph: g, logits: T.cast(logits, 'float32'), params };
}

/** A batch's feeds (everything but the weights). */
export function pairrmFeeds(b: ReturnType<typeof pairrmBatch>, relative: boolean) {
  const dims = [b.n, b.length];
  return {
    input_ids: { dtype: 'int64' as const, dims, data: b.inputIds },
    attention_mask: { dtype: 'int64' as const, dims, data: b.attentionMask },
    markers: { dtype: 'int64' as const, dims: [b.n, 3], data: b.markers },
    ...(relative
      ? {
          c2p_index: { dtype: 'int64' as const, dims: [b.length, b.length], data: b.c2p },
          p2c_index: { dtype: 'int64' as const, dims: [b.length, b.length], data: b.p2c },
        }
      : {}),
  };
}

export class PairRMRunner {
  private constructor(
    readonly config: PairRMConfig,
    private readonly model: WeightsSession,
  ) {}

  /** In the runtime's dtype: float16 holds the weights (but the norms') in half the memory. */
  static async create(runtime: Runtime, cfg: PairRMConfig, weights: Record<string, HostTensor>) {
    const { graph, logits, params } = pairrmGraph(cfg, fusedKernelsFor(runtime.provider), runtime.dtype);
    const model = compile(graph, { logits }, 'pairrm', { provider: runtime.provider });
    return new PairRMRunner(
      cfg,
      await WeightsSession.load(
        runtime,
        model,
        weightsFor(weights, runtime.dtype),
        [...params.keys()],
        'pairrm',
      ),
    );
  }

  /** C for each ordered pair, in batches of at most `maxBatch` sequences. */
  async pairLogits(pairs: PairInput[], maxBatch = 16): Promise<number[]> {
    const out: number[] = [];
    for (let start = 0; start < pairs.length; start += maxBatch) {
      const b = pairrmBatch(this.config, pairs.slice(start, start + maxBatch), start);
      const res = await this.model.run(pairrmFeeds(b, this.config.encoder.relativeAttention), ['logits']);
      out.push(...Array.from(res.logits!.data as Float32Array));
    }
    return out;
  }

  private readonly logits: PairLogits = (pairs) => this.pairLogits(pairs);

  /** P(first ≻ second | prompt) of each pair. */
  pairProbs(pairs: PairInput[]): Promise<number[]> {
    return probsByPairs(this.logits, pairs);
  }

  compare(prompt: number[], candidates: number[][]): Promise<Preferences> {
    return compareByPairs(this.logits, prompt, candidates);
  }

  rank(prompt: number[], candidates: number[][], method: 'matrix' | 'bubble') {
    return rankByPairs(this.logits, prompt, candidates, method);
  }

  release(): Promise<void> {
    return this.model.release();
  }
}
