/**
 * The judge's parameters and graph. The encoder reads `<source> x <candidate1> y_i <candidate2>
 * y_j` with bidirectional attention; the head f(s, c) = W₂·tanh(W₁·[h_s; h_c] + b₁) + b₂ scores
 * the hidden states at the source marker and one candidate marker; the pair's logit is
 * C = f(s, cand1) − f(s, cand2). Both orders are evaluated by the runner, which makes the
 * probabilities antisymmetric.
 */

import { T, type Tensor } from '../../engine/index.js';
import { DuelError } from '../../errors.js';
import { llamaTrunk, type Weights } from '../llama/decoder.js';
import { type HostTensor, initWeights, llamaParams, type ParamSpec } from '../llama/weights.js';
import type { JudgeConfig } from './config.js';

export function judgeParams(cfg: JudgeConfig): ParamSpec[] {
  const h = cfg.encoder.hiddenSize;
  return [
    ...llamaParams({ ...cfg.encoder, tieWordEmbeddings: true }),
    { name: 'head.0.weight', shape: [h, 2 * h], init: 'normal' },
    { name: 'head.0.bias', shape: [h], init: 'zeros' },
    { name: 'head.2.weight', shape: [1, h], init: 'normal' },
    { name: 'head.2.bias', shape: [1], init: 'zeros' },
    ...(cfg.segmentEmbeddings
      ? [{ name: 'segment_embeddings.weight', shape: [3, h], init: 'normal' as const }]
      : []),
  ];
}

export function initJudgeWeights(cfg: JudgeConfig, seed: number): Record<string, HostTensor> {
  return initWeights(judgeParams(cfg), cfg.encoder.initializerRange, seed);
}

export interface JudgeInputs {
  /** int64 [B, T]: the pair sequence, right-padded. */
  inputIds: Tensor;
  /** [B, T]: 1 on tokens, 0 on padding. */
  attentionMask: Tensor;
  /** int64 [B, 3]: positions of the source, candidate-1 and candidate-2 markers. */
  markers: Tensor;
  /** ONNX Runtime's fused kernels (DecoderInputs.fusedKernels): scoring and training on webgpu. */
  fusedKernels?: boolean;
}

/** Each token's segment, [B, T] int64: 0 source, 1 first candidate, 2 second, from the markers. */
function segmentIds(inputIds: Tensor, markers: Tensor): Tensor {
  const t = T.unsqueeze(T.arange(inputIds.graph, inputIds.shape[1]!), 0);
  const from = (k: number) => T.cast(T.lessOrEqual(T.slice(markers, 1, k, k + 1), t), 'int64');
  return T.add(from(1), from(2));
}

/** C = f(source, cand1) − f(source, cand2), [B]. */
export function judgeLogits(cfg: JudgeConfig, w: Weights, inputs: JudgeInputs): Tensor {
  const h = cfg.encoder.hiddenSize;
  const { hidden } = llamaTrunk(cfg.encoder, w, {
    ...inputs,
    bidirectional: true,
    ...(cfg.segmentEmbeddings
      ? {
          embeddingOffset: T.gather(
            w('segment_embeddings.weight'),
            segmentIds(inputs.inputIds, inputs.markers),
          ),
        }
      : {}),
  });
  const [b] = hidden.shape;
  const idx = T.expand(T.unsqueeze(inputs.markers, -1), [b!, 3, h]);
  const [hs, h1, h2] = T.split(T.gatherElements(hidden, idx, 1), 1, 1).map((x) => T.reshape(x, [b!, h]));
  const f = (hc: Tensor) => {
    const z = T.add(T.matmul(T.concat([hs!, hc], 1), T.transposeLast(w('head.0.weight'))), w('head.0.bias'));
    const y = T.add(T.matmul(T.tanh(z), T.transposeLast(w('head.2.weight'))), w('head.2.bias'));
    return T.reshape(y, [b!]);
  };
  return T.sub(f(h1!), f(h2!));
}

export interface PairInput {
  prompt: number[];
  first: number[];
  second: number[];
}

/**
 * `<source> x <candidate1> y_i <candidate2> y_j`, fitted to max_position_embeddings: the prompt
 * keeps its last tokens (up to a third of the room), each candidate its first tokens.
 */
function pairSequence(cfg: JudgeConfig, p: PairInput): { ids: number[]; markers: [number, number, number] } {
  const budget = cfg.encoder.maxPositions - 3;
  const x = p.prompt.slice(-Math.min(p.prompt.length, Math.floor(budget / 3)));
  const cap = Math.floor((budget - x.length) / 2);
  const [a, b] = [p.first.slice(0, cap), p.second.slice(0, cap)];
  const ids = [cfg.sourceTokenId, ...x, cfg.candidate1TokenId, ...a, cfg.candidate2TokenId, ...b];
  return { ids, markers: [0, 1 + x.length, 2 + x.length + a.length] };
}

/** Refuses a pair holding a token id outside [0, vocab), naming it (`offset` numbers pairs in errors). */
export function checkPairIds(pairs: PairInput[], vocab: number, offset = 0): void {
  pairs.forEach((p, i) => {
    for (const ids of [p.prompt, p.first, p.second]) {
      const bad = ids.find((id) => !Number.isInteger(id) || id < 0 || id >= vocab);
      if (bad !== undefined)
        throw DuelError.invalidArgument([
          {
            field: `pairs[${offset + i}]`,
            description: `token id ${bad} is outside the judge's vocabulary [0, ${vocab})`,
          },
        ]);
    }
  });
}

/** Pair sequences as a right-padded batch: ids (padded with `padId`), mask, marker positions. */
export function padPairSequences(seqs: { ids: number[]; markers: number[] }[], padId = 0) {
  const length = Math.max(...seqs.map((s) => s.ids.length));
  const n = seqs.length;
  const inputIds = new BigInt64Array(n * length).fill(BigInt(padId));
  const attentionMask = new BigInt64Array(n * length);
  const markers = new BigInt64Array(n * 3);
  for (const [i, s] of seqs.entries()) {
    for (const [t, id] of s.ids.entries()) {
      inputIds[i * length + t] = BigInt(id);
      attentionMask[i * length + t] = 1n;
    }
    for (const [k, m] of s.markers.entries()) markers[i * 3 + k] = BigInt(m);
  }
  return { n, length, inputIds, attentionMask, markers };
}

/** Pairs as a right-padded batch (ids, mask, marker positions); `offset` numbers pairs in errors. */
export function pairBatch(cfg: JudgeConfig, pairs: PairInput[], offset = 0) {
  checkPairIds(pairs, cfg.encoder.vocabSize, offset);
  return padPairSequences(pairs.map((p) => pairSequence(cfg, p)));
}
