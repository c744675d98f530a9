/**
 * The Llama-family decoder traced on the engine, in the order transformers' modeling_llama.py
 * computes it: embed → N × (RMSNorm → attention with rotary embeddings → residual → RMSNorm →
 * SwiGLU → residual) → RMSNorm → LM head. Qwen2 (QKV bias), Qwen3 (per-head RMSNorm of queries
 * and keys) and Mistral (sliding window) are the same code with a flag each. Linear layers see activations as [B·T, H] so every projection and
 * its gradients are single GEMMs. With float16 weights the activations and the cache are float16,
 * and what needs the range or the precision is float32 as in transformers: each RMSNorm's
 * statistics (its weight stays float32), the rotary angles and the attention softmax.
 */
import { addDims, type Dim, type Provider, T, type Tensor } from '../../engine/index.js';
import { linear } from '../common/linear.js';
import { inFloat32 } from '../common/precision.js';
import type { LlamaConfig } from './config.js';
import { layerPrefix } from './weights.js';

/** Looks up a parameter tensor by its Hugging Face name. */
export type Weights = (name: string) => Tensor;

export interface DecoderInputs {
  /** int64 [B, T] */
  inputIds: Tensor;
  /** [B, T], 1 for real tokens and 0 for padding (any numeric or bool dtype); absent: no padding. */
  attentionMask?: Tensor;
  /** int64 [B, T]; absent: 0…T−1 in every row. */
  positionIds?: Tensor;
  /** Past keys and values per layer, [B, kvHeads, P, headDim] each (generation with a KV cache). */
  past?: { key: Tensor; value: Tensor }[];
  /** Logits of the last position only ([B, 1, vocab]): what a decoding step needs. */
  lastOnly?: boolean;
  /** Every token sees every (unpadded) token: the judge's encoder. */
  bidirectional?: boolean;
  /** [B, T, H] added to the token embeddings: an encoder's segment embeddings (the judge's). */
  embeddingOffset?: Tensor;
  /**
   * LoRA on the named linear layers (`q_proj`, ..., `down_proj`, `lm_head`): y = W x + scale · B A x, with A and
   * B looked up as `<module>.lora_A.weight` and `<module>.lora_B.weight` (src/models/lora/).
   */
  lora?: { scale: number | Tensor; targets: ReadonlySet<string> };
  /**
   * Every RMSNorm and rotary embedding as one node of ONNX Runtime's (T.fusedRmsNorm,
   * T.fusedRotary, each with its gradient written out) and every linear layer as one Gemm
   * (T.linear): fewer dispatches on a device. float32, within rounding of the unfused graph;
   * `fusedKernelsFor` says where.
   */
  fusedKernels?: boolean;
  /**
   * Gradient checkpointing: each layer is a segment whose intermediates the backward pass
   * recomputes (T.checkpoint), so training keeps one hidden state per layer instead of every
   * activation, for one more forward pass. The values are the same; only memory and time change.
   */
  checkpointing?: boolean;
}

/**
 * Whether graphs for this provider use the fused kernels: on webgpu, where each node is a dispatch
 * that costs more host time than a small tensor's arithmetic. The cpu provider keeps the unfused
 * graphs, whose numbers every figure in docs/RESULTS.md comes from.
 */
export const fusedKernelsFor = (provider: Provider): boolean => provider === 'webgpu';

export interface DecoderOutputs {
  /** [B, T, vocab] */
  logits: Tensor;
  /** Keys and values per layer including this call's tokens: [B, kvHeads, P + T, headDim]. */
  present: { key: Tensor; value: Tensor }[];
}

const LOWEST = { float32: -3.4028234663852886e38, float64: -Number.MAX_VALUE } as Record<string, number>;

/** Inverse frequencies of the rotary angles, one per pair of dimensions (θ^(−2i/d)). */
function inverseFrequencies(cfg: LlamaConfig): Float64Array {
  return new Float64Array(cfg.headDim / 2).map((_, i) => 1 / cfg.ropeTheta ** ((2 * i) / cfg.headDim));
}

/** cos and sin of the rotary angles, [B|1, 1, T, headDim] (rotate-half layout: angles repeated). */
function rotary(
  cfg: LlamaConfig,
  positions: Tensor,
  dtype: 'float32' | 'float64',
): { cos: Tensor; sin: Tensor } {
  const g = positions.graph;
  const half = cfg.headDim / 2;
  const invFreq = inverseFrequencies(cfg);
  const table = dtype === 'float32' ? Float32Array.from(invFreq) : invFreq;
  const freqs = T.mul(T.unsqueeze(T.cast(positions, dtype), -1), g.constant(table, dtype, [half]));
  const angles = T.unsqueeze(T.concat([freqs, freqs], -1), 1);
  return { cos: T.cos(angles), sin: T.sin(angles) };
}

/**
 * What fusedRotary reads: cos and sin of every position's angles up to max_position_embeddings,
 * [maxPositions, headDim/2], computed here in float64 (generation, the judge and reward models keep
 * positions below it).
 */
function rotaryCache(cfg: LlamaConfig, g: Tensor['graph']): { cos: Tensor; sin: Tensor } {
  const invFreq = inverseFrequencies(cfg);
  const half = invFreq.length;
  const table = (f: (a: number) => number) =>
    g.constant(
      Float32Array.from({ length: cfg.maxPositions * half }, (_, k) =>
        f(Math.floor(k / half) * invFreq[k % half]!),
      ),
      'float32',
      [cfg.maxPositions, half],
    );
  return { cos: table(Math.cos), sin: table(Math.sin) };
}

function rotateHalf(x: Tensor, half: number): Tensor {
  return T.concat([T.neg(T.slice(x, -1, half, 2 * half)), T.slice(x, -1, 0, half)], -1);
}

function applyRotary(x: Tensor, cos: Tensor, sin: Tensor, half: number): Tensor {
  return T.add(T.mul(x, cos), T.mul(rotateHalf(x, half), sin));
}

/** [N, heads·d] → [B, heads, T, d] */
function splitHeads(x: Tensor, b: Dim, t: Dim, heads: number, d: number): Tensor {
  return T.transpose(T.reshape(x, [b, t, heads, d]), [0, 2, 1, 3]);
}

/** The position of a sequence's first token, as the int64 [1] offset RotaryEmbedding reads. */
function startPosition(g: Tensor['graph'], pastLen: Dim): Tensor {
  return typeof pastLen === 'number'
    ? g.constant(BigInt64Array.of(BigInt(pastLen)), 'int64', [1])
    : T.reshape(T.dimValue(g, pastLen), [1]);
}

/** Absolute positions of this call's tokens: P, P+1, …, P+T−1 as int64 [T]. */
function positionsAfter(inputIds: Tensor, pastLen: Dim): Tensor {
  const t = inputIds.shape[1]!;
  const here = T.arange(inputIds.graph, t);
  return pastLen === 0 ? here : T.add(here, T.dimValue(inputIds.graph, pastLen));
}

/** Which keys each query may see: [B|1, 1, T, P+T] bool. */
function attentionMask(cfg: LlamaConfig, inputs: DecoderInputs, pastLen: Dim): Tensor {
  const ids = inputs.inputIds;
  // Query i sits at absolute index P + i; it sees key j when j <= P + i (and j > P + i − window).
  const q = T.unsqueeze(positionsAfter(ids, pastLen), 1);
  const k = T.unsqueeze(T.arange(ids.graph, addDims(pastLen, ids.shape[1]!)), 0);
  const keys = inputs.attentionMask;
  if (inputs.bidirectional) {
    if (!keys) throw new Error('llama: a bidirectional encoder needs an attention mask');
    return T.unsqueeze(T.greater(keys, 0), [1, 2]);
  }
  let mask = T.lessOrEqual(k, q);
  if (cfg.slidingWindow !== undefined) mask = T.and(mask, T.greater(k, T.sub(q, cfg.slidingWindow)));
  mask = T.unsqueeze(mask, [0, 1]);
  if (keys) {
    const keep = keys.dtype === 'bool' ? keys : T.greater(keys, 0);
    mask = T.and(mask, T.unsqueeze(keep, [1, 2]));
  }
  return mask;
}

/** x[:, T−1, :] of [B, T, H] as [B, H] (T may be symbolic). */
function lastPosition(x: Tensor): Tensor {
  const [b, t, h] = x.shape as [Dim, Dim, Dim];
  const idx = T.expand(T.reshape(T.sub(T.dimValue(x.graph, t), 1), [1, 1, 1]), [b, 1, h]);
  return T.reshape(T.gatherElements(x, idx, 1), [b, h]);
}

/** An adapter's output times its scale: a scale fed as an input is float32, whatever `y` computes in. */
export const scaled = (y: Tensor, scale: number | Tensor): Tensor =>
  T.mul(y, typeof scale === 'number' ? scale : T.cast(scale, y.dtype));

/** Logits (and the KV cache) of the decoder. */
export function llamaForward(cfg: LlamaConfig, w: Weights, inputs: DecoderInputs): DecoderOutputs {
  const [b, t] = inputs.inputIds.shape as [Dim, Dim];
  const { hidden, present } = llamaTrunk(cfg, w, inputs);
  const h = inputs.lastOnly ? lastPosition(hidden) : hidden;
  const logits = T.reshape(lmHead(cfg, w, h, inputs), [b, inputs.lastOnly ? 1 : t, cfg.vocabSize]);
  return { logits, present };
}

/** The LM head (with its adapter when `lm_head` is a LoRA target): logits [rows, vocab] of hidden states [..., H]. */
export function lmHead(
  cfg: LlamaConfig,
  w: Weights,
  hidden: Tensor,
  inputs: Pick<DecoderInputs, 'lora' | 'fusedKernels'>,
): Tensor {
  const h = T.reshape(hidden, [-1, cfg.hiddenSize]);
  const head = cfg.tieWordEmbeddings ? w('model.embed_tokens.weight') : w('lm_head.weight');
  const fused = inputs.fusedKernels ?? false;
  const y = linear(h, head, undefined, fused);
  const lora = inputs.lora;
  if (!lora?.targets.has('lm_head')) return y;
  const down = linear(h, w('lm_head.lora_A.weight'), undefined, fused);
  return T.add(y, scaled(linear(down, w('lm_head.lora_B.weight'), undefined, fused), lora.scale));
}

/** The blocks and the final norm: hidden states [B, T, H] (what the LM head or a judge head reads). */
export function llamaTrunk(
  cfg: LlamaConfig,
  w: Weights,
  inputs: DecoderInputs,
): { hidden: Tensor; present: DecoderOutputs['present'] } {
  const { inputIds } = inputs;
  if (inputIds.rank !== 2 || inputIds.dtype !== 'int64')
    throw new Error(`llama: input_ids must be int64 [B, T], got ${inputIds}`);
  const [b, t] = inputIds.shape as [Dim, Dim];
  const { headDim: d, numHeads: nh, numKvHeads: nkv } = cfg;
  const rep = nh / nkv;
  const pastLen: Dim = inputs.past?.[0]?.key.shape[2] ?? 0;
  const positions = inputs.positionIds ?? T.unsqueeze(positionsAfter(inputIds, pastLen), 0);
  const embed = w('model.embed_tokens.weight');
  if (embed.dtype !== 'float32' && embed.dtype !== 'float64' && embed.dtype !== 'float16')
    throw new Error(`llama: weights must be float32, float64 or float16, got ${embed.dtype}`);
  const half = embed.dtype === 'float16';
  const fused = inputs.fusedKernels ?? false;
  const angles = fused
    ? rotaryCache(cfg, inputIds.graph)
    : rotary(cfg, positions, half ? 'float32' : (embed.dtype as 'float32' | 'float64'));
  // The fused kernel computes in float32 (its inputs are cast); the unfused one in the cache's dtype.
  const { cos, sin } =
    half && !fused ? { cos: T.cast(angles.cos, 'float16'), sin: T.cast(angles.sin, 'float16') } : angles;
  // The fused kernel reads per-row positions [B, T], or, as shape [1], the first of 0, 1, 2, …
  // shared by every row: no [B, T] int64 grid made on the CPU and copied in each run.
  const fullPositions = !fused
    ? positions
    : inputs.positionIds
      ? T.expand(positions, [b, t])
      : startPosition(inputIds.graph, pastLen);
  const rotate = (x: Tensor) =>
    fused ? inFloat32(x, (y) => T.fusedRotary(y, fullPositions, cos, sin)) : applyRotary(x, cos, sin, d / 2);
  const mask = attentionMask(cfg, inputs, pastLen);

  let h = T.reshape(T.gather(embed, inputIds), [-1, cfg.hiddenSize]);
  if (inputs.embeddingOffset) h = T.add(h, T.reshape(inputs.embeddingOffset, [-1, cfg.hiddenSize]));
  const scale = 1 / Math.sqrt(d);
  // A module's linear layer, with its adapter when it has one (PEFT's order: B(A(x)) · scale).
  const lora = inputs.lora;
  const layer = (x: Tensor, module: string, b?: Tensor) => {
    const y = linear(x, w(`${module}.weight`), b, fused);
    if (!lora?.targets.has(module.slice(module.lastIndexOf('.') + 1))) return y;
    const down = linear(x, w(`${module}.lora_A.weight`), undefined, fused);
    return T.add(y, scaled(linear(down, w(`${module}.lora_B.weight`), undefined, fused), lora.scale));
  };
  const present: DecoderOutputs['present'] = [];

  const norm = fused ? T.fusedRmsNorm : T.rmsNorm;
  const rmsNorm = (x: Tensor, weight: Tensor, eps: number) => inFloat32(x, (y) => norm(y, weight, eps));
  const block = (i: number, input: Tensor): Tensor => {
    let h = input;
    const p = layerPrefix(i);
    const attnIn = rmsNorm(h, w(`${p}.input_layernorm.weight`), cfg.rmsNormEps);
    const bias = (n: string) => (cfg.qkvBias ? w(`${p}.self_attn.${n}.bias`) : undefined);
    const proj = (n: string) => layer(attnIn, `${p}.self_attn.${n}`, bias(n));
    // Qwen3 normalises each head's queries and keys over head_dim, before rotary embeddings.
    const headNorm = (x: Tensor, n: string) =>
      cfg.qkNorm ? rmsNorm(x, w(`${p}.self_attn.${n}.weight`), cfg.rmsNormEps) : x;
    const q = rotate(headNorm(splitHeads(proj('q_proj'), b, t, nh, d), 'q_norm'));
    let k = rotate(headNorm(splitHeads(proj('k_proj'), b, t, nkv, d), 'k_norm'));
    let v = splitHeads(proj('v_proj'), b, t, nkv, d);
    const past = inputs.past?.[i];
    if (past) {
      k = T.concat([past.key, k], 2);
      v = T.concat([past.value, v], 2);
    }
    present.push({ key: k, value: v });

    // Grouped-query attention without copying keys: queries grouped [B, kv, rep, T, d] meet
    // keys [B, kv, 1, S, d] through matmul's batch broadcasting.
    const qg = rep === 1 ? q : T.reshape(q, [b, nkv, rep, t, d]);
    const kg = rep === 1 ? k : T.unsqueeze(k, 2);
    const vg = rep === 1 ? v : T.unsqueeze(v, 2);
    const m = rep === 1 ? mask : T.unsqueeze(mask, 2);
    const scores = T.mul(T.matmul(qg, T.transposeLast(kg)), scale);
    const masked = T.where(m, scores, LOWEST[scores.dtype] ?? -65504);
    const ctx = T.matmul(
      inFloat32(masked, (s) => T.softmax(s, -1)),
      vg,
    );
    const merged = T.reshape(T.transpose(rep === 1 ? ctx : T.reshape(ctx, [b, nh, t, d]), [0, 2, 1, 3]), [
      -1,
      nh * d,
    ]);
    h = T.add(h, layer(merged, `${p}.self_attn.o_proj`));

    const mlpIn = rmsNorm(h, w(`${p}.post_attention_layernorm.weight`), cfg.rmsNormEps);
    const gate = T.silu(layer(mlpIn, `${p}.mlp.gate_proj`));
    const up = layer(mlpIn, `${p}.mlp.up_proj`);
    h = T.add(h, layer(T.mul(gate, up), `${p}.mlp.down_proj`));
    return h;
  };
  for (let i = 0; i < cfg.numLayers; i++) {
    h = inputs.checkpointing ? (T.checkpoint([h], ([x]) => [block(i, x!)])[0] as Tensor) : block(i, h);
  }

  const hidden = T.reshape(rmsNorm(h, w('model.norm.weight'), cfg.rmsNormEps), [b, t, cfg.hiddenSize]);
  return { hidden, present };
}
