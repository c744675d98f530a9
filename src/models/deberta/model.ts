/**
 * The DeBERTa-v2/v3 encoder as transformers' DebertaV2Model computes it: word (+ absolute
 * position) embeddings, LayerNorm, masked; then per layer disentangled self-attention: content →
 * content, content → position (c2p: queries against projected relative-position embeddings) and
 * position → content (p2c: keys against them), each scaled by 1/√(d·(1 + #position terms)), a
 * masked softmax, and post-LayerNorm residual blocks with the exact GELU. Relative positions are
 * (query − key), log-bucketed as make_log_bucket_position does; the two gather indices they give
 * depend on the length alone, so the host computes them (`relativeIndices`) and feeds them.
 */
import { type Dim, T, type Tensor } from '../../engine/index.js';
import { linear } from '../common/linear.js';
import { inFloat32 } from '../common/precision.js';
import { type HostTensor, initWeights, type ParamSpec } from '../llama/weights.js';
import type { DebertaConfig } from './config.js';

/** Parameters under transformers' names, after `prefix` (PairRM's is 'pretrained_model.'). */
export function debertaParams(cfg: DebertaConfig, prefix = ''): ParamSpec[] {
  const { hiddenSize: h, intermediateSize: f, vocabSize: v } = cfg;
  const a = cfg.numHeads * cfg.headDim;
  const linearSpecs = (name: string, out: number, inp: number): ParamSpec[] => [
    { name: `${prefix}${name}.weight`, shape: [out, inp], init: 'normal' },
    { name: `${prefix}${name}.bias`, shape: [out], init: 'zeros' },
  ];
  const norm = (name: string): ParamSpec[] => [
    { name: `${prefix}${name}.weight`, shape: [h], init: 'ones' },
    { name: `${prefix}${name}.bias`, shape: [h], init: 'zeros' },
  ];
  const specs: ParamSpec[] = [
    { name: `${prefix}embeddings.word_embeddings.weight`, shape: [v, h], init: 'normal' },
  ];
  if (cfg.positionBiasedInput)
    specs.push({
      name: `${prefix}embeddings.position_embeddings.weight`,
      shape: [cfg.maxPositions, h],
      init: 'normal',
    });
  specs.push(...norm('embeddings.LayerNorm'));
  for (let i = 0; i < cfg.numLayers; i++) {
    const l = `encoder.layer.${i}`;
    specs.push(
      ...linearSpecs(`${l}.attention.self.query_proj`, a, h),
      ...linearSpecs(`${l}.attention.self.key_proj`, a, h),
      ...linearSpecs(`${l}.attention.self.value_proj`, a, h),
    );
    if (cfg.relativeAttention && !cfg.shareAttKey) {
      if (cfg.c2p) specs.push(...linearSpecs(`${l}.attention.self.pos_key_proj`, a, h));
      if (cfg.p2c) specs.push(...linearSpecs(`${l}.attention.self.pos_query_proj`, a, h));
    }
    specs.push(
      ...linearSpecs(`${l}.attention.output.dense`, h, a),
      ...norm(`${l}.attention.output.LayerNorm`),
      ...linearSpecs(`${l}.intermediate.dense`, f, h),
      ...linearSpecs(`${l}.output.dense`, h, f),
      ...norm(`${l}.output.LayerNorm`),
    );
  }
  if (cfg.relativeAttention)
    specs.push({ name: `${prefix}encoder.rel_embeddings.weight`, shape: [2 * cfg.span, h], init: 'normal' });
  if (cfg.normRelEmbeddings) specs.push(...norm('encoder.LayerNorm'));
  return specs;
}

export function initDebertaWeights(
  cfg: DebertaConfig,
  seed: number,
  prefix = '',
): Record<string, HostTensor> {
  return initWeights(debertaParams(cfg, prefix), cfg.initializerRange, seed);
}

/**
 * transformers' make_log_bucket_position for one relative position, in float32 as torch computes
 * it (the bucket boundary is a ceil of float32 logs).
 */
export function logBucket(rel: number, bucketSize: number, maxPosition: number): number {
  const f = Math.fround;
  const mid = Math.floor(bucketSize / 2);
  const absPos = rel < mid && rel > -mid ? mid - 1 : Math.abs(rel);
  if (absPos <= mid) return rel;
  const ratio = f(f(Math.log(f(absPos / mid))) / f(Math.log(f((maxPosition - 1) / mid))));
  return (Math.ceil(f(ratio * (mid - 1))) + mid) * Math.sign(rel);
}

/**
 * The gather indices of c2p ([i][j] = clamp(δ(i, j) + span)) and p2c ([j][i] = clamp(−δ(j, i) +
 * span), read transposed) for a length `t`, δ the (bucketed) query − key.
 */
export function relativeIndices(cfg: DebertaConfig, t: number): { c2p: BigInt64Array; p2c: BigInt64Array } {
  const span = cfg.span;
  const rel = (i: number, j: number) =>
    cfg.positionBuckets > 0 && cfg.maxRelativePositions > 0
      ? logBucket(i - j, cfg.positionBuckets, cfg.maxRelativePositions)
      : i - j;
  const clamp = (x: number) => BigInt(Math.min(Math.max(x, 0), 2 * span - 1));
  const c2p = new BigInt64Array(t * t);
  const p2c = new BigInt64Array(t * t);
  for (let i = 0; i < t; i++)
    for (let j = 0; j < t; j++) {
      const r = rel(i, j);
      c2p[i * t + j] = clamp(r + span);
      p2c[i * t + j] = clamp(-r + span);
    }
  return { c2p, p2c };
}

export interface DebertaInputs {
  /** int64 [B, T], right-padded. */
  inputIds: Tensor;
  /** int64 [B, T]: 1 on tokens, 0 on padding. */
  attentionMask: Tensor;
  /** int64 [T, T] from relativeIndices (with relative attention). */
  c2pIndex?: Tensor;
  p2cIndex?: Tensor;
  /** Each linear layer as one Gemm (T.linear), for graphs on webgpu (fusedKernelsFor). */
  fusedKernels?: boolean;
}

type Weights = (name: string) => Tensor;

/** nn.Linear `name` with its bias (common/linear.ts). */
export const linearLayer = (x: Tensor, w: Weights, name: string, fused: boolean) =>
  linear(x, w(`${name}.weight`), w(`${name}.bias`), fused);

/** The last hidden states, [B, T, H]. */
export function debertaEncoder(
  cfg: DebertaConfig,
  weights: Weights,
  inputs: DebertaInputs,
  prefix = '',
): Tensor {
  const w = (name: string) => weights(`${prefix}${name}`);
  const dense = (x: Tensor, name: string) => linearLayer(x, w, name, inputs.fusedKernels ?? false);
  // In float16 (half weights, precision.ts) the norms and the softmax compute in float32.
  const norm = (x: Tensor, name: string) =>
    inFloat32(x, (y) => T.layerNorm(y, w(`${name}.weight`), w(`${name}.bias`), cfg.layerNormEps));
  const { inputIds, attentionMask } = inputs;
  const [b, t] = inputIds.shape as [Dim, Dim];
  const { numHeads: nh, headDim: d } = cfg;
  const g = inputIds.graph;

  let x = T.gather(w('embeddings.word_embeddings.weight'), inputIds);
  if (cfg.positionBiasedInput)
    x = T.add(x, T.gather(w('embeddings.position_embeddings.weight'), T.arange(g, t)));
  const keep = T.cast(attentionMask, x.dtype);
  x = T.mul(norm(x, 'embeddings.LayerNorm'), T.unsqueeze(keep, -1));
  // Query i sees key j when both are tokens (get_attention_mask: m_i · m_j).
  const visible = T.greater(T.mul(T.unsqueeze(attentionMask, [1, 2]), T.unsqueeze(attentionMask, [1, 3])), 0);

  const heads = (y: Tensor) => T.transpose(T.reshape(y, [b, t, nh, d]), [0, 2, 1, 3]);
  const posHeads = (y: Tensor) => T.transpose(T.reshape(y, [2 * cfg.span, nh, d]), [1, 0, 2]);
  const scale = 1 / Math.sqrt(d * (1 + Number(cfg.c2p) + Number(cfg.p2c)));
  let rel: Tensor | undefined;
  if (cfg.relativeAttention) {
    rel = w('encoder.rel_embeddings.weight');
    if (cfg.normRelEmbeddings) rel = norm(rel, 'encoder.LayerNorm');
  }
  const byIndex = (index: Tensor | undefined) => {
    if (!index) throw new Error('deberta: relative attention needs the c2p/p2c indices (relativeIndices)');
    return T.expand(T.unsqueeze(index, [0, 1]), [b, nh, t, t]);
  };

  for (let i = 0; i < cfg.numLayers; i++) {
    const l = `encoder.layer.${i}.attention`;
    const q = heads(dense(x, `${l}.self.query_proj`));
    const k = heads(dense(x, `${l}.self.key_proj`));
    const v = heads(dense(x, `${l}.self.value_proj`));
    let scores = T.mul(T.matmul(q, T.transposeLast(k)), scale);
    if (rel) {
      if (cfg.c2p) {
        const posKey = posHeads(dense(rel, `${l}.self.${cfg.shareAttKey ? 'key_proj' : 'pos_key_proj'}`));
        const c2p = T.gatherElements(T.matmul(q, T.transposeLast(posKey)), byIndex(inputs.c2pIndex), 3);
        scores = T.add(scores, T.mul(c2p, scale));
      }
      if (cfg.p2c) {
        const posQuery = posHeads(
          dense(rel, `${l}.self.${cfg.shareAttKey ? 'query_proj' : 'pos_query_proj'}`),
        );
        const p2c = T.gatherElements(T.matmul(k, T.transposeLast(posQuery)), byIndex(inputs.p2cIndex), 3);
        scores = T.add(scores, T.mul(T.transposeLast(p2c), scale));
      }
    }
    // XSoftmax: hidden keys get the lowest float, and rows of a hidden query come out zero.
    const probs = inFloat32(scores, (s) =>
      T.where(visible, T.softmax(T.where(visible, s, -3.4028234663852886e38), -1), 0),
    );
    const ctx = T.reshape(T.transpose(T.matmul(probs, v), [0, 2, 1, 3]), [b, t, nh * d]);
    const attended = norm(T.add(dense(ctx, `${l}.output.dense`), x), `${l}.output.LayerNorm`);
    const inner = T.geluExact(dense(attended, `encoder.layer.${i}.intermediate.dense`));
    x = norm(
      T.add(dense(inner, `encoder.layer.${i}.output.dense`), attended),
      `encoder.layer.${i}.output.LayerNorm`,
    );
  }
  return x;
}
