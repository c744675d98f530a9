/**
 * PairRM (LLM-Blender's DebertaV2PairRM): the DeBERTa encoder reads
 * `[CLS] <|source|> x [SEP] [CLS] <|candidate1|> a [SEP] [CLS] <|candidate2|> b [SEP]`, built and
 * truncated as LLM-Blender's tokenize_pair builds it; the head (Linear 2H → H, tanh, Linear H →
 * n_tasks) scores the hidden states at the source and each candidate prefix, and the ordered
 * pair's logit is the mean over tasks of head(source, cand1) − head(source, cand2).
 */
import { T, type Tensor } from '../../engine/index.js';
import { debertaEncoder, debertaParams, linearLayer, relativeIndices } from '../deberta/model.js';
import { checkPairIds, type PairInput, padPairSequences } from '../judge/model.js';
import { type HostTensor, initWeights, type ParamSpec } from '../llama/weights.js';
import type { PairRMConfig } from './config.js';

const PREFIX = 'pretrained_model.';

export function pairrmParams(cfg: PairRMConfig): ParamSpec[] {
  const h = cfg.encoder.hiddenSize;
  return [
    ...debertaParams(cfg.encoder, PREFIX),
    // nn.Sequential(Dropout, Linear, Tanh, Dropout, Linear): the Linears are entries 1 and 4.
    { name: 'head_layer.1.weight', shape: [h, 2 * h], init: 'normal' },
    { name: 'head_layer.1.bias', shape: [h], init: 'zeros' },
    { name: 'head_layer.4.weight', shape: [cfg.nTasks, h], init: 'normal' },
    { name: 'head_layer.4.bias', shape: [cfg.nTasks], init: 'zeros' },
  ];
}

export function initPairRMWeights(cfg: PairRMConfig, seed: number): Record<string, HostTensor> {
  return initWeights(pairrmParams(cfg), cfg.encoder.initializerRange, seed);
}

export interface PairRMInputs {
  inputIds: Tensor;
  attentionMask: Tensor;
  /** int64 [B, 3]: positions of the source, candidate-1 and candidate-2 prefixes. */
  markers: Tensor;
  c2pIndex?: Tensor;
  p2cIndex?: Tensor;
  /** DebertaInputs.fusedKernels. */
  fusedKernels?: boolean;
}

/** The ordered pairs' logits, [B]. */
export function pairrmLogits(cfg: PairRMConfig, w: (name: string) => Tensor, inputs: PairRMInputs): Tensor {
  const h = cfg.encoder.hiddenSize;
  const hidden = debertaEncoder(cfg.encoder, w, inputs, PREFIX);
  const [b] = hidden.shape;
  const idx = T.expand(T.unsqueeze(inputs.markers, -1), [b!, 3, h]);
  const [hs, h1, h2] = T.split(T.gatherElements(hidden, idx, 1), 1, 1).map((x) => T.reshape(x, [b!, h]));
  const fused = inputs.fusedKernels ?? false;
  const head = (hc: Tensor) => {
    const z = linearLayer(T.concat([hs!, hc], 1), w, 'head_layer.1', fused);
    return linearLayer(T.tanh(z), w, 'head_layer.4', fused);
  };
  return T.mean(T.sub(head(h1!), head(h2!)), -1);
}

/**
 * tokenize_pair on token ids: each part is `[CLS] prefix ids… [SEP]` cut to its length (the
 * source to source_max_length, each candidate to half the room the source leaves).
 */
export function pairrmSequence(
  cfg: PairRMConfig,
  p: PairInput,
): { ids: number[]; markers: [number, number, number] } {
  const part = (prefix: number, ids: number[], max: number) => [
    cfg.clsTokenId,
    ...[prefix, ...ids].slice(0, Math.max(0, max - 2)),
    cfg.sepTokenId,
  ];
  const source = part(cfg.sourcePrefixId, p.prompt, cfg.sourceMaxLength);
  const room = Math.floor((cfg.sourceMaxLength + 2 * cfg.candidateMaxLength - source.length) / 2);
  const a = part(cfg.cand1PrefixId, p.first, room);
  const b = part(cfg.cand2PrefixId, p.second, room);
  return { ids: [...source, ...a, ...b], markers: [1, source.length + 1, source.length + a.length + 1] };
}

/** Pairs as a right-padded batch with the marker positions and the relative-position indices. */
export function pairrmBatch(cfg: PairRMConfig, pairs: PairInput[], offset = 0) {
  checkPairIds(pairs, cfg.encoder.vocabSize, offset);
  const b = padPairSequences(
    pairs.map((p) => pairrmSequence(cfg, p)),
    cfg.encoder.padTokenId,
  );
  return { ...b, ...relativeIndices(cfg.encoder, b.length) };
}
