/**
 * Counts the floating-point work of the part of a graph that computes some outputs, from the
 * traced shapes (symbolic dims bound by the caller). MatMul (and Gemm) is 2·m·k·n per batch element, the
 * convention of papers and of PyTorch's flop counter; every other float op is one FLOP per output
 * element (reductions: per input element). Layout ops (reshape, transpose, slice, ...) are free.
 */
import { isFloat } from './dtype.js';
import { type Graph, reachable, type Tensor } from './graph.js';
import { type Dim, dimTerms } from './shape.js';

const FREE = new Set([
  'input',
  'constant',
  'reshape',
  'transpose',
  'expand',
  'concat',
  'slice',
  'splitSizes',
  'pad',
  'gather',
  'cast',
  'stopGradient',
  'zeros',
  'arange',
  'dimValue',
]);

export interface FlopCount {
  matmul: number;
  other: number;
  total: number;
}

export function countFlops(
  graph: Graph,
  outputs: Record<string, Tensor>,
  bindings: Record<string, number> = {},
): FlopCount {
  const size = (d: Dim): number => {
    if (typeof d === 'number') return d;
    return dimTerms(d).reduce(
      (sum, t) =>
        sum +
        t.syms.reduce((p, s) => {
          const v = bindings[s];
          if (v === undefined) throw new Error(`countFlops: no value bound for symbolic dim '${s}'`);
          return p * v;
        }, t.coef),
      0,
    );
  };
  const numel = (t: Tensor) => t.shape.reduce<number>((p, d) => p * size(d), 1);

  const reached = reachable(Object.values(outputs));

  let matmul = 0;
  let other = 0;
  for (const node of graph.nodes) {
    if (!reached.has(node.id) || FREE.has(node.op.name)) continue;
    const out = node.outputs[0];
    if (!out || !isFloat(out.dtype)) continue;
    if (node.op.name === 'matmul') {
      const k = size(node.inputs[0]!.shape.at(-1)!);
      matmul += 2 * k * numel(out);
    } else if (node.op.name === 'gemm') {
      // op(A)·op(B) (+ bias): k is A's inner dim, its first when A is read transposed.
      const a = node.inputs[0]!;
      const k = size((node.attrs as { transA: boolean }).transA ? a.shape[0]! : a.shape[1]!);
      matmul += 2 * k * numel(out);
      if (node.inputs[2]) other += numel(out);
    } else if (node.op.name.startsWith('reduce')) {
      other += numel(node.inputs[0]!);
    } else {
      other += numel(out);
    }
  }
  return { matmul, other, total: matmul + other };
}
