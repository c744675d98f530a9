/**
 * Composites: built only from primitives, so each gets its gradient for free. Stable forms
 * (max-shifted softmax/logsumexp, |x|-split softplus) keep float32 finite for large logits. Beside
 * them, the few primitives the network layers need (softmax, log-softmax, silu) and, for graphs on
 * a device, ONNX Runtime's fused kernels with their gradients written out (fusedRmsNorm, fusedRotary).
 */
import { MS_DOMAIN, type OpDef, type Tensor } from '../graph.js';
import { axisOf, type Dim, prodDims } from '../shape.js';
import {
  abs,
  add,
  cast,
  div,
  erf,
  exp,
  log,
  maximum,
  mul,
  neg,
  reciprocal,
  sigmoid,
  sqrt,
  stopGradient,
  sub,
  tanh,
} from './elementwise.js';
import { like, scalar, unbroadcast } from './helpers.js';
import { reduceMax, reduceSum } from './reduce-layout.js';
import { dimValue } from './sequence.js';

/** Mean over axes; a symbolic count is read from the shape at run time. */
export function mean(x: Tensor, axes?: number | number[], keepdims = false): Tensor {
  const list = axes === undefined ? [...x.shape.keys()] : typeof axes === 'number' ? [axes] : axes;
  const count = prodDims(list.map((a) => x.shape[a < 0 ? a + x.rank : a] as Dim));
  const total = reduceSum(x, list, keepdims);
  return div(total, typeof count === 'number' ? count : cast(dimValue(x.graph, count), x.dtype));
}

/** log Σ exp(x) along an axis, shifted by the (constant) max so nothing overflows. */
export function logsumexp(x: Tensor, axis = -1, keepdims = false): Tensor {
  const m = stopGradient(reduceMax(x, axis, true));
  const lse = add(log(reduceSum(exp(sub(x, m)), axis, true)), m);
  return keepdims ? lse : reduceSum(lse, axis, false);
}

// Softmax and log-softmax are primitives rather than composites: attention and the LM head
// spend much of a step in them, and ONNX Runtime's fused kernels beat four elementwise passes.
type AxisAttrs = { axis: number };

const Softmax: OpDef<AxisAttrs> = {
  name: 'softmax',
  infer: ([x]) => [like(x!)],
  lower: (e, n) => e.emit('Softmax', [e.name(n.inputs[0]!)], [e.name(n.outputs[0]!)], { axis: n.attrs.axis }),
  // dx = y ⊙ (g − Σ g⊙y)
  vjp: ({ outputs: [y], grads: [g], attrs: { axis } }) =>
    g ? [mul(y!, sub(g, reduceSum(mul(g, y!), axis, true)))] : [],
};

const LogSoftmax: OpDef<AxisAttrs> = {
  name: 'logSoftmax',
  infer: ([x]) => [like(x!)],
  lower: (e, n) => {
    const [x, y] = [e.name(n.inputs[0]!), e.name(n.outputs[0]!)];
    if (e.provider !== 'webgpu') return e.emit('LogSoftmax', [x], [y], { axis: n.attrs.axis });
    // WebGPU has no LogSoftmax kernel: (x − m) − log Σ exp(x − m), m the max, all on the device.
    const axes = e.ints([n.attrs.axis]);
    const [m, shifted, ex, sum, lse] = ['max', 'shifted', 'exp', 'sum', 'lse'].map((h) => e.fresh(h)) as [
      string,
      string,
      string,
      string,
      string,
    ];
    e.emit('ReduceMax', [x, axes], [m], { keepdims: 1 });
    e.emit('Sub', [x, m], [shifted]);
    e.emit('Exp', [shifted], [ex]);
    e.emit('ReduceSum', [ex, axes], [sum], { keepdims: 1 });
    e.emit('Log', [sum], [lse]);
    e.emit('Sub', [shifted, lse], [y]);
  },
  // dx = g − softmax(x) · Σ g
  vjp: ({ outputs: [y], grads: [g], attrs: { axis } }) =>
    g ? [sub(g, mul(exp(y!), reduceSum(g, axis, true)))] : [],
};

export function logSoftmax(x: Tensor, axis = -1): Tensor {
  return x.graph.apply1(LogSoftmax, [x], { axis: axisOf(axis, x.rank, 'logSoftmax') });
}

export function softmax(x: Tensor, axis = -1): Tensor {
  return x.graph.apply1(Softmax, [x], { axis: axisOf(axis, x.rank, 'softmax') });
}

/** log(1 + eˣ) = max(x, 0) + log(1 + e^−|x|). */
export function softplus(x: Tensor): Tensor {
  return add(maximum(x, 0), log(add(exp(neg(abs(x))), 1)));
}

// SiLU is a primitive so its lowering can depend on the dtype: ONNX Runtime fuses x·Sigmoid(x)
// into com.microsoft.QuickGelu, which has a float kernel only, so float64 spells it x/(1+e⁻ˣ).
const Silu: OpDef<Record<string, never>> = {
  name: 'silu',
  infer: ([x]) => [like(x!)],
  lower: (e, n) => {
    const [x, y] = [e.name(n.inputs[0]!), e.name(n.outputs[0]!)];
    if (n.inputs[0]!.dtype !== 'float64') {
      const s = e.fresh('sigmoid');
      e.emit('Sigmoid', [x], [s]);
      e.emit('Mul', [x, s], [y]);
      return;
    }
    const [nx, ex, den] = [e.fresh('neg'), e.fresh('exp'), e.fresh('den')];
    e.emit('Neg', [x], [nx]);
    e.emit('Exp', [nx], [ex]);
    e.emit('Add', [ex, e.scalar(1, 'float64')], [den]);
    e.emit('Div', [x, den], [y]);
  },
  // d/dx x·σ(x) = σ(x)·(1 + x·(1 − σ(x)))
  vjp: ({ inputs: [x], grads: [g] }) => {
    if (!g) return [];
    const s = sigmoid(x!);
    return [mul(g, mul(s, add(mul(x!, sub(1, s)), 1)))];
  },
};

/** x·σ(x) (SwiGLU's gate). */
export function silu(x: Tensor): Tensor {
  return x.graph.apply1(Silu, [x], {} as Record<string, never>);
}

/** GELU, tanh approximation (GPT-2's): ½x(1 + tanh(√(2/π)(x + 0.044715x³))). */
export function gelu(x: Tensor): Tensor {
  const inner = mul(add(x, mul(mul(mul(x, x), x), 0.044715)), Math.sqrt(2 / Math.PI));
  return mul(mul(x, 0.5), add(tanh(inner), 1));
}

/** GELU, exact: ½x(1 + erf(x/√2)) (torch's default, BERT's and DeBERTa's `gelu`). */
export function geluExact(x: Tensor): Tensor {
  return mul(mul(x, 0.5), add(erf(mul(x, Math.SQRT1_2)), 1));
}

/** (x − mean) / sqrt(var + eps) · weight + bias over the last axis, biased variance (torch's LayerNorm). */
export function layerNorm(x: Tensor, weight: Tensor, bias: Tensor, eps: number): Tensor {
  const centred = sub(x, mean(x, -1, true));
  const variance = mean(mul(centred, centred), -1, true);
  return add(mul(mul(centred, rsqrt(add(variance, scalar(x.graph, eps, x.dtype)))), weight), bias);
}

export function rsqrt(x: Tensor): Tensor {
  return reciprocal(sqrt(x));
}

/** x / sqrt(mean(x², last axis) + eps) · weight (Llama's RMSNorm). */
export function rmsNorm(x: Tensor, weight: Tensor, eps: number): Tensor {
  return mul(mul(x, inverseRms(x, eps)), weight);
}

/** 1 / sqrt(mean(x², last axis) + eps), kept [..., 1]: rmsNorm's scale and its fused form's gradient. */
function inverseRms(x: Tensor, eps: number): Tensor {
  return rsqrt(add(mean(mul(x, x), -1, true), scalar(x.graph, eps, x.dtype)));
}

const FusedRmsNorm: OpDef<{ eps: number }> = {
  name: 'fusedRmsNorm',
  infer: ([x]) => [like(x!)],
  lower: (e, n) =>
    e.emit(
      'SimplifiedLayerNormalization',
      [e.name(n.inputs[0]!), e.name(n.inputs[1]!)],
      [e.name(n.outputs[0]!)],
      { axis: -1, epsilon: { float: n.attrs.eps }, stash_type: 1 },
    ),
  // y = w·x·r with r = (mean(x²) + ε)^(−½) over the last axis, n = x·r:
  // dx = r·(g·w − n·mean(n·g·w)), dw = Σ over rows of g·n. r is computed again rather than taken
  // from the kernel's optional inv_std_var output: ONNX Runtime 1.30's WebGPU kernel writes the
  // row's mean there (its LayerNormalization's output order), the cpu kernel 1/rms.
  vjp: ({ inputs: [x, w], grads: [g], attrs: { eps } }) => {
    if (!g) return [];
    const r = inverseRms(x!, eps);
    const gw = mul(g, w!);
    const n = mul(x!, r);
    const dx = mul(sub(gw, mul(n, mean(mul(n, gw), -1, true))), r);
    return [dx, unbroadcast(mul(g, n), w!.shape)];
  },
};

/**
 * rmsNorm as one node: ONNX Runtime's SimplifiedLayerNormalization (the cpu and webgpu providers
 * have kernels), for graphs on a device, where every node costs dispatch time and rmsNorm's eight
 * cost eight; its gradient is written out.
 * Not bit-identical to rmsNorm (one pass in float32).
 */
export function fusedRmsNorm(x: Tensor, weight: Tensor, eps: number): Tensor {
  if (x.dtype !== 'float32') throw new Error(`fusedRmsNorm: float32 only, got ${x.dtype}`);
  return x.graph.apply1(FusedRmsNorm, [x, weight], { eps });
}

const FusedRotary: OpDef<Record<string, never>> = {
  name: 'fusedRotary',
  infer: ([x]) => [like(x!)],
  lower: (e, n) =>
    e.emit(
      'RotaryEmbedding',
      n.inputs.map((t) => e.name(t)),
      [e.name(n.outputs[0]!)],
      { interleaved: 0 },
      MS_DOMAIN,
    ),
  // Each pair of coordinates turns by its position's angle θ; the transpose of a rotation turns
  // by −θ: the same kernel with the sine negated.
  vjp: ({ inputs: [, positions, cos, sin], grads: [g] }) =>
    g ? [fusedRotary(g, positions!, cos!, neg(sin!)), undefined, undefined, undefined] : [],
};

/**
 * Rotary position embedding in the rotate-half layout (Llama's) as one node: ONNX Runtime's
 * com.microsoft RotaryEmbedding (cpu and webgpu kernels). x [B, heads, T, d], positionIds int64
 * [B, T], cosCache and sinCache [maxPositions, d/2] (cos and sin of position · inverse
 * frequency). For graphs on a device, as fusedRmsNorm; its gradient is the same kernel.
 */
export function fusedRotary(x: Tensor, positionIds: Tensor, cosCache: Tensor, sinCache: Tensor): Tensor {
  if (x.dtype !== 'float32' || x.rank !== 4)
    throw new Error(`fusedRotary: x must be float32 [B, heads, T, d], got ${x}`);
  return x.graph.apply1(FusedRotary, [x, positionIds, cosCache, sinCache], {} as Record<string, never>);
}
