/** Shared chores of op definitions: lifting numbers to constants, un-broadcasting gradients. */
import { type DType, fromNumbers } from '../dtype.js';
import type { Graph, Tensor, TensorType } from '../graph.js';
import { type Shape, sameShape, shapeString } from '../shape.js';
import { reduceSum, reshape } from './reduce-layout.js';

export type TensorLike = Tensor | number;

/** A scalar constant of `dtype`. */
export function scalar(graph: Graph, value: number, dtype: DType): Tensor {
  return graph.constant(fromNumbers(dtype, [value]), dtype, []);
}

/** Two operands as tensors of one graph; a number takes the other operand's dtype. */
export function pair(a: TensorLike, b: TensorLike, op: string): [Tensor, Tensor] {
  if (typeof a === 'number' && typeof b === 'number')
    throw new Error(`${op}: at least one operand must be a tensor`);
  const ta = typeof a === 'number' ? scalar((b as Tensor).graph, a, (b as Tensor).dtype) : a;
  const tb = typeof b === 'number' ? scalar(ta.graph, b, ta.dtype) : b;
  return [ta, tb];
}

export function sameDtype(inputs: Tensor[]): DType {
  const d = inputs[0]!.dtype;
  for (const t of inputs)
    if (t.dtype !== d) throw new Error(`dtypes differ: ${inputs.map((x) => x.dtype).join(', ')}`);
  return d;
}

export function like(t: Tensor): TensorType {
  return { dtype: t.dtype, shape: t.shape };
}

/**
 * Sums a gradient of the broadcast shape back to an input's shape: over leading axes the input
 * lacks, and over axes where the input had size 1.
 */
export function unbroadcast(g: Tensor, target: Shape): Tensor {
  if (sameShape(g.shape, target)) return g;
  const lead = g.rank - target.length;
  if (lead < 0)
    throw new Error(
      `unbroadcast: gradient ${shapeString(g.shape)} has fewer dims than ${shapeString(target)}`,
    );
  let out = g;
  if (lead > 0) out = reduceSum(out, [...Array(lead).keys()], false);
  const ones = target.flatMap((d, i) => (d === 1 && out.shape[i] !== 1 ? [i] : []));
  if (ones.length > 0) out = reduceSum(out, ones, true);
  return sameShape(out.shape, target) ? out : reshape(out, target);
}
