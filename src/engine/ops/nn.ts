/**
 * Composites: built only from primitives, so each gets its gradient for free. Stable forms
 * (max-shifted softmax/logsumexp, |x|-split softplus) keep float32 finite for large logits.
 */
import type { Tensor } from '../graph.js';
import { type Dim, numel } from '../shape.js';
import {
  abs,
  add,
  div,
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
import { scalar } from './helpers.js';
import { reduceMax, reduceSum } from './reduce-layout.js';

function countOf(x: Tensor, axes: number[]): number {
  return numel(axes.map((a) => x.shape[a < 0 ? a + x.rank : a] as Dim));
}

/** Mean over axes (static sizes). */
export function mean(x: Tensor, axes?: number | number[], keepdims = false): Tensor {
  const list = axes === undefined ? [...x.shape.keys()] : typeof axes === 'number' ? [axes] : axes;
  return div(reduceSum(x, list, keepdims), countOf(x, list));
}

/** log Σ exp(x) along an axis, shifted by the (constant) max so nothing overflows. */
export function logsumexp(x: Tensor, axis = -1, keepdims = false): Tensor {
  const m = stopGradient(reduceMax(x, axis, true));
  const lse = add(log(reduceSum(exp(sub(x, m)), axis, true)), m);
  return keepdims ? lse : reduceSum(lse, axis, false);
}

export function logSoftmax(x: Tensor, axis = -1): Tensor {
  return sub(x, logsumexp(x, axis, true));
}

export function softmax(x: Tensor, axis = -1): Tensor {
  const e = exp(sub(x, stopGradient(reduceMax(x, axis, true))));
  return div(e, reduceSum(e, axis, true));
}

/** log(1 + eˣ) = max(x, 0) + log(1 + e^−|x|). */
export function softplus(x: Tensor): Tensor {
  return add(maximum(x, 0), log(add(exp(neg(abs(x))), 1)));
}

/** x·σ(x) (SwiGLU's gate). */
export function silu(x: Tensor): Tensor {
  return mul(x, sigmoid(x));
}

/** GELU, tanh approximation (GPT-2's): ½x(1 + tanh(√(2/π)(x + 0.044715x³))). */
export function gelu(x: Tensor): Tensor {
  const inner = mul(add(x, mul(mul(mul(x, x), x), 0.044715)), Math.sqrt(2 / Math.PI));
  return mul(mul(x, 0.5), add(tanh(inner), 1));
}

export function rsqrt(x: Tensor): Tensor {
  return reciprocal(sqrt(x));
}

/** x / sqrt(mean(x², last axis) + eps) · weight (Llama's RMSNorm). */
export function rmsNorm(x: Tensor, weight: Tensor, eps: number): Tensor {
  const ms = mean(mul(x, x), -1, true);
  return mul(mul(x, rsqrt(add(ms, scalar(x.graph, eps, x.dtype)))), weight);
}
