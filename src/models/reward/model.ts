/**
 * A Bradley-Terry reward model as transformers' `*ForSequenceClassification` computes it: the
 * decoder's trunk (causal attention, final norm), `score` (a bias-free Linear hidden → 1) applied at
 * each row's last non-padding token. "Last non-padding" is transformers' rule, kept exactly: the
 * rightmost position whose id is not `pad_token_id` (so a real token equal to the pad id, such as
 * an EOS used as pad, is skipped too); without a pad id, the last position, one row at a time.
 */
import { T, type Tensor } from '../../engine/index.js';
import { DuelError } from '../../errors.js';
import { llamaTrunk, type Weights } from '../llama/decoder.js';
import { type HostTensor, initWeights, llamaParams, type ParamSpec } from '../llama/weights.js';
import type { RewardConfig } from './config.js';

export function rewardParams(cfg: RewardConfig): ParamSpec[] {
  return [
    // The trunk's weights; the LM head is not part of a sequence-classification model.
    ...llamaParams({ ...cfg.backbone, tieWordEmbeddings: true }),
    { name: 'score.weight', shape: [1, cfg.backbone.hiddenSize], init: 'normal' },
  ];
}

export function initRewardWeights(cfg: RewardConfig, seed: number): Record<string, HostTensor> {
  return initWeights(rewardParams(cfg), cfg.backbone.initializerRange, seed);
}

export interface RewardInputs {
  /** int64 [B, T], right-padded. */
  inputIds: Tensor;
  /** [B, T]: 1 on tokens, 0 on padding. */
  attentionMask: Tensor;
  /** int64 [B]: the position whose hidden state is scored (lastTokenIndex). */
  last: Tensor;
  /** ONNX Runtime's fused kernels (DecoderInputs.fusedKernels): scoring and training on webgpu. */
  fusedKernels?: boolean;
}

/** r = score · h[last], [B]. */
export function rewardLogits(cfg: RewardConfig, w: Weights, inputs: RewardInputs): Tensor {
  const h = cfg.backbone.hiddenSize;
  const { hidden } = llamaTrunk(cfg.backbone, w, inputs);
  const [b] = hidden.shape;
  const idx = T.expand(T.reshape(inputs.last, [-1, 1, 1]), [b!, 1, h]);
  const at = T.reshape(T.gatherElements(hidden, idx, 1), [b!, h]);
  return T.reshape(T.matmul(at, T.transposeLast(w('score.weight'))), [b!]);
}

/** transformers' index of the scored token in one padded row. */
export function lastTokenIndex(row: ArrayLike<number>, padId: number | undefined): number {
  if (padId === undefined) return row.length - 1;
  let last = 0;
  for (let t = 0; t < row.length; t++) if (row[t] !== padId) last = t;
  return last;
}

export interface RewardSequence {
  prompt: number[];
  completion: number[];
}

/**
 * `x y` fitted to max_position_embeddings (the prompt keeps its last tokens, up to half the room;
 * the completion its first), right-padded with pad_token_id. Without a pad id transformers scores
 * one row at a time, so more than one sequence is refused here and the runner sends them singly.
 */
export function rewardBatch(cfg: RewardConfig, seqs: RewardSequence[], offset = 0) {
  const { vocabSize: vocab, maxPositions, padTokenId } = cfg.backbone;
  if (padTokenId === undefined && seqs.length > 1)
    throw new Error('reward: a model without pad_token_id scores one sequence per batch');
  const rows = seqs.map((s, i) => {
    for (const ids of [s.prompt, s.completion]) {
      const bad = ids.find((id) => !Number.isInteger(id) || id < 0 || id >= vocab);
      if (bad !== undefined)
        throw DuelError.invalidArgument([
          {
            field: `sequences[${offset + i}]`,
            description: `token id ${bad} is outside the reward model's vocabulary [0, ${vocab})`,
          },
        ]);
    }
    const x = s.prompt.slice(-Math.min(s.prompt.length, Math.floor(maxPositions / 2)));
    return [...x, ...s.completion.slice(0, maxPositions - x.length)];
  });
  const length = Math.max(1, ...rows.map((r) => r.length));
  const n = rows.length;
  const pad = padTokenId ?? 0;
  const inputIds = new BigInt64Array(n * length).fill(BigInt(pad));
  const attentionMask = new BigInt64Array(n * length);
  const last = new BigInt64Array(n);
  for (const [i, r] of rows.entries()) {
    for (const [t, id] of r.entries()) {
      inputIds[i * length + t] = BigInt(id);
      attentionMask[i * length + t] = 1n;
    }
    const padded = Array.from(inputIds.subarray(i * length, (i + 1) * length), Number);
    last[i] = BigInt(lastTokenIndex(padded, padTokenId));
  }
  return { n, length, inputIds, attentionMask, last };
}
