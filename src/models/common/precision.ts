/**
 * Which weights a graph computing in float16 holds in half precision: every one but the norms'
 * (a few values each, and the norms compute in float32): the rule the decoder, duel's judge, the
 * reward models and PairRM's DeBERTa share, so that a weight set is cast one way everywhere; and
 * `inFloat32`, how each of them computes what half would lose (norm statistics, softmax).
 */
import {
  type ComputeDtype,
  type DType,
  T,
  type Tensor,
  toFloat16,
  type WireTensor,
} from '../../engine/index.js';
import type { HostTensor } from '../llama/weights.js';

/** A norm's scale or shift: Llama's `…norm.weight`, DeBERTa's `…LayerNorm.weight` and `.bias`. */
const NORM_PARAM = /norm\.(weight|bias)$/i;

/** The dtype weight `name` is held in by a graph computing in `dtype`. */
export function weightDtype(name: string, dtype: ComputeDtype): DType {
  return dtype === 'float16' && !NORM_PARAM.test(name) ? 'float16' : 'float32';
}

/** `f` of a float16 `x` computed in float32, its result float16 again; of any other `x`, `f(x)`. */
export function inFloat32(x: Tensor, f: (x: Tensor) => Tensor): Tensor {
  return x.dtype === 'float16' ? T.cast(f(T.cast(x, 'float32')), 'float16') : f(x);
}

/** Host weights as a graph computing in `dtype` takes them (half precision's bits where it holds half). */
export function weightsFor(
  weights: Record<string, HostTensor>,
  dtype: ComputeDtype,
): Record<string, WireTensor> {
  return Object.fromEntries(
    Object.entries(weights).map(([name, t]) => [
      name,
      weightDtype(name, dtype) === 'float16'
        ? { dtype: 'float16', dims: t.dims, data: toFloat16(t.data as ArrayLike<number>) }
        : {
            dtype: 'float32',
            dims: t.dims,
            data: t.data instanceof Float32Array ? t.data : Float32Array.from(t.data),
          },
    ]),
  );
}

/** A float32 input (a training state's weight, an adapter's A or B) as a graph computing in `dtype` reads it. */
export const castWeight = (name: string, t: Tensor, dtype: ComputeDtype): Tensor =>
  T.cast(t, weightDtype(name, dtype));
