/** Reductions and layout primitives: sum, max, reshape, transpose, expand, (un)squeeze, concat, slice. */
import type { Emitter, OpDef, Tensor } from '../graph.js';
import {
  addDims,
  axisOf,
  broadcast,
  type Dim,
  divDims,
  isStatic,
  numel,
  prodDims,
  type Shape,
  sameShape,
  shapeString,
} from '../shape.js';
import { cast, div, equal, mul } from './elementwise.js';
import { scalar, unbroadcast } from './helpers.js';

// ── reductions ─────────────────────────────────────────────────────────────
interface ReduceAttrs {
  axes: number[];
  keepdims: boolean;
}

function reducedShape(x: Tensor, { axes, keepdims }: ReduceAttrs): Dim[] {
  return x.shape.flatMap((d, i) => (axes.includes(i) ? (keepdims ? [1] : []) : [d]));
}

/** The gradient of a reduction's output, broadcast back over the reduced axes. */
function spread(g: Tensor, x: Tensor, { axes, keepdims }: ReduceAttrs): Tensor {
  const kept = keepdims ? g : unsqueeze(g, axes);
  return expand(kept, x.shape);
}

function reduceOp(name: string, onnx: string, vjp: OpDef<ReduceAttrs>['vjp']): OpDef<ReduceAttrs> {
  return {
    name,
    infer: ([x], a) => [{ dtype: x!.dtype, shape: reducedShape(x!, a) }],
    lower: (e, n) =>
      e.emit(onnx, [e.name(n.inputs[0]!), e.ints(n.attrs.axes)], [e.name(n.outputs[0]!)], {
        keepdims: n.attrs.keepdims ? 1 : 0,
      }),
    vjp,
  };
}

const ReduceSum = reduceOp('reduceSum', 'ReduceSum', ({ inputs: [x], grads: [g], attrs }) =>
  g ? [spread(g, x!, attrs)] : [],
);
// Ties share the gradient equally, so the rule is a valid subgradient and sums to g.
const ReduceMax = reduceOp('reduceMax', 'ReduceMax', ({ inputs: [x], outputs: [y], grads: [g], attrs }) => {
  if (!g) return [];
  const isMax = cast(equal(x!, spread(y!, x!, attrs)), x!.dtype);
  const count = reduceSum(isMax, attrs.axes, true);
  return [mul(spread(g, x!, attrs), div(isMax, count))];
});

function normAxes(x: Tensor, axes: number | readonly number[] | undefined, op: string): number[] {
  const list = axes === undefined ? [...x.shape.keys()] : typeof axes === 'number' ? [axes] : [...axes];
  return [...new Set(list.map((a) => axisOf(a, x.rank, op)))].sort((a, b) => a - b);
}

export function reduceSum(x: Tensor, axes?: number | readonly number[], keepdims = false): Tensor {
  return x.graph.apply1(ReduceSum, [x], { axes: normAxes(x, axes, 'reduceSum'), keepdims });
}

export function reduceMax(x: Tensor, axes?: number | readonly number[], keepdims = false): Tensor {
  return x.graph.apply1(ReduceMax, [x], { axes: normAxes(x, axes, 'reduceMax'), keepdims });
}

// ── reshape ────────────────────────────────────────────────────────────────
const Reshape: OpDef<{ shape: Dim[] }> = {
  name: 'reshape',
  infer([x], { shape }) {
    if (isStatic(x!.shape) && isStatic(shape) && numel(x!.shape) !== numel(shape)) {
      throw new Error(`cannot reshape ${numel(x!.shape)} elements into ${shapeString(shape)}`);
    }
    return [{ dtype: x!.dtype, shape }];
  },
  lower: (e, n) =>
    e.emit('Reshape', [e.name(n.inputs[0]!), e.shapeOf(n.attrs.shape)], [e.name(n.outputs[0]!)]),
  vjp: ({ inputs: [x], grads: [g] }) => (g ? [reshape(g, x!.shape)] : []),
};

/** Reshape; one dim may be -1 (with symbolic dims, when the rest divides the input exactly). */
export function reshape(x: Tensor, shape: Shape): Tensor {
  let target = [...shape];
  const unknown = target.indexOf(-1);
  if (unknown >= 0) {
    const known = prodDims(target.filter((d) => d !== -1));
    const inferred = divDims(prodDims(x.shape), known);
    if (inferred === undefined || (typeof inferred === 'number' && !Number.isInteger(inferred))) {
      throw new Error(`reshape: cannot infer -1 for ${shapeString(x.shape)} → ${shapeString(shape)}`);
    }
    target = target.map((d) => (d === -1 ? inferred : d));
  }
  return sameShape(x.shape, target) ? x : x.graph.apply1(Reshape, [x], { shape: target });
}

// ── transpose ──────────────────────────────────────────────────────────────
const Transpose: OpDef<{ perm: number[] }> = {
  name: 'transpose',
  infer([x], { perm }) {
    if (perm.length !== x!.rank || [...perm].sort().some((p, i) => p !== i)) {
      throw new Error(`perm ${JSON.stringify(perm)} is not a permutation of ${x!.rank} axes`);
    }
    return [{ dtype: x!.dtype, shape: perm.map((p) => x!.shape[p]!) }];
  },
  lower: (e, n) =>
    e.emit('Transpose', [e.name(n.inputs[0]!)], [e.name(n.outputs[0]!)], { perm: n.attrs.perm }),
  vjp: ({ grads: [g], attrs: { perm } }) => {
    if (!g) return [];
    const inverse = perm.map((_, i) => perm.indexOf(i));
    return [transpose(g, inverse)];
  },
};

export function transpose(x: Tensor, perm: number[]): Tensor {
  return perm.every((p, i) => p === i) ? x : x.graph.apply1(Transpose, [x], { perm });
}

/** Swaps the last two axes (the matrix transpose of a batch of matrices). */
export function transposeLast(x: Tensor): Tensor {
  const perm = [...x.shape.keys()];
  [perm[x.rank - 1], perm[x.rank - 2]] = [perm[x.rank - 2]!, perm[x.rank - 1]!];
  return transpose(x, perm);
}

// ── expand ─────────────────────────────────────────────────────────────────
const Expand: OpDef<{ shape: Dim[] }> = {
  name: 'expand',
  infer([x], { shape }) {
    const b = broadcast(x!.shape, shape);
    if (!b || !sameShape(b, shape)) throw new Error(`cannot expand to ${shapeString(shape)}`);
    return [{ dtype: x!.dtype, shape }];
  },
  lower: (e, n) =>
    e.emit('Expand', [e.name(n.inputs[0]!), e.shapeOf(n.attrs.shape)], [e.name(n.outputs[0]!)]),
  vjp: ({ inputs: [x], grads: [g] }) => {
    if (!g) return [];
    return [unbroadcast(g, x!.shape)];
  },
};

export function expand(x: Tensor, shape: Shape): Tensor {
  return sameShape(x.shape, shape) ? x : x.graph.apply1(Expand, [x], { shape: [...shape] });
}

// ── unsqueeze / squeeze (as reshapes: one rule, no separate lowering) ────────
export function unsqueeze(x: Tensor, axes: number | number[]): Tensor {
  const list = (typeof axes === 'number' ? [axes] : axes)
    .map((a) => (a < 0 ? a + x.rank + 1 : a))
    .sort((a, b) => a - b);
  const shape: Dim[] = [...x.shape];
  for (const a of list) shape.splice(a, 0, 1);
  return reshape(x, shape);
}

export function squeeze(x: Tensor, axes: number | number[]): Tensor {
  const list = (typeof axes === 'number' ? [axes] : axes).map((a) => axisOf(a, x.rank, 'squeeze'));
  for (const a of list)
    if (x.shape[a] !== 1) throw new Error(`squeeze: axis ${a} of ${shapeString(x.shape)} is not 1`);
  return reshape(
    x,
    x.shape.filter((_, i) => !list.includes(i)),
  );
}

// ── concat / slice ─────────────────────────────────────────────────────────
const Concat: OpDef<{ axis: number }> = {
  name: 'concat',
  infer(xs, { axis }) {
    const first = xs[0]!;
    let total: Dim = 0;
    for (const t of xs) {
      if (t.dtype !== first.dtype || t.rank !== first.rank) throw new Error('inputs differ in dtype or rank');
      t.shape.forEach((d, i) => {
        if (i !== axis && d !== first.shape[i]) throw new Error(`inputs differ on axis ${i}`);
      });
      total = addDims(total, t.shape[axis]!);
    }
    return [{ dtype: first.dtype, shape: first.shape.map((d, i) => (i === axis ? total : d)) }];
  },
  lower: (e, n) => e.emit('Concat', n.inputs.map(e.name), [e.name(n.outputs[0]!)], { axis: n.attrs.axis }),
  vjp: ({ inputs, grads: [g], attrs: { axis } }) => {
    if (!g) return [];
    if (inputs.some((t) => typeof t.shape[axis] !== 'number'))
      throw new Error('concat: gradients through a symbolic concat axis are not supported');
    let start = 0;
    return inputs.map((t) => {
      const size = t.shape[axis] as number;
      const piece = slice(g, axis, start, start + size);
      start += size;
      return piece;
    });
  },
};

export function concat(xs: Tensor[], axis: number): Tensor {
  if (xs.length === 1) return xs[0]!;
  return xs[0]!.graph.apply1(Concat, xs, { axis: axisOf(axis, xs[0]!.rank, 'concat') });
}

interface SliceAttrs {
  axis: number;
  start: number;
  end: number;
}

const Slice: OpDef<SliceAttrs> = {
  name: 'slice',
  infer([x], { axis, start, end }) {
    const d = x!.shape[axis]!;
    if (typeof d !== 'number') throw new Error(`slice of symbolic axis ${axis} (${d}) is not supported`);
    if (start < 0 || end > d || start >= end) throw new Error(`slice [${start}, ${end}) is out of [0, ${d})`);
    return [{ dtype: x!.dtype, shape: x!.shape.map((s, i) => (i === axis ? end - start : s)) }];
  },
  lower: (e, n) =>
    e.emit(
      'Slice',
      [e.name(n.inputs[0]!), e.ints([n.attrs.start]), e.ints([n.attrs.end]), e.ints([n.attrs.axis])],
      [e.name(n.outputs[0]!)],
    ),
  vjp: ({ inputs: [x], grads: [g], attrs: { axis, start, end } }) => {
    if (!g) return [];
    return [x!.graph.apply1(Pad, [g], { axis, before: start, after: (x!.shape[axis] as number) - end })];
  },
};

/** x[..., start:end, ...] along one axis (static bounds; negative counts from the end). */
export function slice(x: Tensor, axis: number, start: number, end: number): Tensor {
  const a = axisOf(axis, x.rank, 'slice');
  const d = x.shape[a]!;
  const n = typeof d === 'number' ? d : Number.NaN;
  const s = start < 0 ? n + start : start;
  const e = end < 0 ? n + end : Math.min(end, n);
  if (s === 0 && e === n) return x;
  return x.graph.apply1(Slice, [x], { axis: a, start: s, end: e });
}

/** Equal pieces of `size` along an axis. */
export function split(x: Tensor, axis: number, size: number): Tensor[] {
  const a = axisOf(axis, x.rank, 'split');
  const d = x.shape[a];
  if (typeof d !== 'number' || d % size !== 0)
    throw new Error(`split: axis ${a} (${d}) is not a multiple of ${size}`);
  return Array.from({ length: d / size }, (_, i) => slice(x, a, i * size, (i + 1) * size));
}

/**
 * Outputs per ONNX Split node. A WebGPU shader binds its input and every output as a storage
 * buffer, and devices may offer as few as 8 (the WebGPU minimum; lavapipe 16: ONNX Runtime refuses
 * a Split of 16 pieces there), so a longer split is a tree of Splits.
 */
const SPLIT_FANOUT = 7;

function emitSplit(e: Emitter, input: string, sizes: number[], outputs: string[], axis: number): void {
  if (sizes.length <= SPLIT_FANOUT) {
    e.emit('Split', [input, e.ints(sizes)], outputs, { axis });
    return;
  }
  const per = Math.ceil(sizes.length / SPLIT_FANOUT);
  const groups = Array.from({ length: Math.ceil(sizes.length / per) }, (_, g) => ({
    sizes: sizes.slice(g * per, (g + 1) * per),
    outputs: outputs.slice(g * per, (g + 1) * per),
  }));
  const names = groups.map((g) => (g.sizes.length === 1 ? g.outputs[0]! : e.fresh('split_group')));
  e.emit('Split', [input, e.ints(groups.map((g) => g.sizes.reduce((a, b) => a + b, 0)))], names, { axis });
  groups.forEach((g, i) => {
    if (g.sizes.length > 1) emitSplit(e, names[i]!, g.sizes, g.outputs, axis);
  });
}

const SplitSizes: OpDef<{ axis: number; sizes: number[] }> = {
  name: 'splitSizes',
  infer([x], { axis, sizes }) {
    const d = x!.shape[axis];
    const total = sizes.reduce((a, b) => a + b, 0);
    if (d !== total) throw new Error(`sizes [${sizes}] sum to ${total}, axis ${axis} is ${d}`);
    return sizes.map((s) => ({ dtype: x!.dtype, shape: x!.shape.map((v, i) => (i === axis ? s : v)) }));
  },
  lower: (e, n) => emitSplit(e, e.name(n.inputs[0]!), n.attrs.sizes, n.outputs.map(e.name), n.attrs.axis),
  vjp: ({ inputs: [x], outputs, grads, attrs: { axis } }) => {
    if (grads.every((g) => !g)) return [];
    const zero = scalar(x!.graph, 0, x!.dtype);
    return [
      concat(
        outputs.map((o, i) => grads[i] ?? expand(zero, o.shape)),
        axis,
      ),
    ];
  },
};

/**
 * Pieces of the given sizes along an axis, as one ONNX Split node: one dispatch for all the
 * pieces, where `slice` per piece costs one each (a GPU's cost is per node, not per byte).
 */
export function splitSizes(x: Tensor, axis: number, sizes: number[]): Tensor[] {
  const a = axisOf(axis, x.rank, 'splitSizes');
  if (sizes.length === 1) return [x];
  return x.graph.apply(SplitSizes, [x], { axis: a, sizes });
}

const Pad: OpDef<{ axis: number; before: number; after: number }> = {
  name: 'pad',
  infer: ([x], { axis, before, after }) => [
    {
      dtype: x!.dtype,
      shape: x!.shape.map((d, i) => (i === axis ? (d as number) + before + after : d)),
    },
  ],
  lower: (e, n) => {
    const rank = n.inputs[0]!.rank;
    const pads = new Array(2 * rank).fill(0);
    pads[n.attrs.axis] = n.attrs.before;
    pads[rank + n.attrs.axis] = n.attrs.after;
    e.emit('Pad', [e.name(n.inputs[0]!), e.ints(pads)], [e.name(n.outputs[0]!)]);
  },
  vjp: ({ inputs: [x], grads: [g], attrs: { axis, before } }) =>
    g ? [slice(g, axis, before, before + (x!.shape[axis] as number))] : [],
};
