/**
 * The judge's parameters and graph. The encoder reads `<source> x <candidate1> y_i <candidate2>
 * y_j` with bidirectional attention; the head f(s, c) = W₂·tanh(W₁·[h_s; h_c] + b₁) + b₂ scores
 * the hidden states at the source marker and one candidate marker; the pair's logit is
 * C = f(s, cand1) − f(s, cand2). Both orders are evaluated by the runner, which makes the
 * probabilities antisymmetric.
 */

import { T, type Tensor } from '../../engine/index.js';
import { fillNormal, rng } from '../common/rng.js';
import { llamaTrunk, type Weights } from '../llama/decoder.js';
import { type HostTensor, llamaParams, type ParamSpec } from '../llama/weights.js';
import type { JudgeConfig } from './config.js';

export function judgeParams(cfg: JudgeConfig): ParamSpec[] {
  const h = cfg.encoder.hiddenSize;
  return [
    ...llamaParams({ ...cfg.encoder, tieWordEmbeddings: true }),
    { name: 'head.0.weight', shape: [h, 2 * h], init: 'normal' },
    { name: 'head.0.bias', shape: [h], init: 'zeros' },
    { name: 'head.2.weight', shape: [1, h], init: 'normal' },
    { name: 'head.2.bias', shape: [1], init: 'zeros' },
  ];
}

export function initJudgeWeights(cfg: JudgeConfig, seed: number): Record<string, HostTensor> {
  const next = rng(seed);
  const out: Record<string, HostTensor> = {};
  for (const spec of judgeParams(cfg)) {
    const data = new Float32Array(spec.shape.reduce((a, b) => a * b, 1));
    if (spec.init === 'normal') fillNormal(data, cfg.encoder.initializerRange, next);
    else if (spec.init === 'ones') data.fill(1);
    out[spec.name] = { dtype: 'float32', dims: spec.shape, data };
  }
  return out;
}

export interface JudgeInputs {
  /** int64 [B, T]: the pair sequence, right-padded. */
  inputIds: Tensor;
  /** [B, T]: 1 on tokens, 0 on padding. */
  attentionMask: Tensor;
  /** int64 [B, 3]: positions of the source, candidate-1 and candidate-2 markers. */
  markers: Tensor;
}

/** C = f(source, cand1) − f(source, cand2), [B]. */
export function judgeLogits(cfg: JudgeConfig, w: Weights, inputs: JudgeInputs): Tensor {
  const h = cfg.encoder.hiddenSize;
  const { hidden } = llamaTrunk(cfg.encoder, w, { ...inputs, bidirectional: true });
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
