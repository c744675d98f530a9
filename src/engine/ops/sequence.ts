/** cumsum, triangular masks, one-hot, arange, top-k, argmax and random draws. */
import { type DType, ONNX_DTYPE } from '../dtype.js';
import type { Graph, OpDef, Tensor } from '../graph.js';
import type { Dim } from '../shape.js';
import { axisOf } from '../shape.js';

const CumSum: OpDef<{ axis: number; reverse: boolean; exclusive: boolean }> = {
  name: 'cumsum',
  infer: ([x]) => [{ dtype: x!.dtype, shape: x!.shape }],
  lower: (e, n) =>
    e.emit('CumSum', [e.name(n.inputs[0]!), e.ints([n.attrs.axis])], [e.name(n.outputs[0]!)], {
      reverse: n.attrs.reverse ? 1 : 0,
      exclusive: n.attrs.exclusive ? 1 : 0,
    }),
  // The adjoint of a running sum is the running sum in the other direction.
  vjp: ({ grads: [g], attrs }) => (g ? [cumsum(g, attrs.axis, { ...attrs, reverse: !attrs.reverse })] : []),
};

export function cumsum(
  x: Tensor,
  axis: number,
  opts: { reverse?: boolean; exclusive?: boolean } = {},
): Tensor {
  return x.graph.apply1(CumSum, [x], {
    axis: axisOf(axis, x.rank, 'cumsum'),
    reverse: opts.reverse ?? false,
    exclusive: opts.exclusive ?? false,
  });
}

const Trilu: OpDef<{ upper: boolean; k: number }> = {
  name: 'trilu',
  infer: ([x]) => {
    if (x!.rank < 2) throw new Error('needs rank >= 2');
    return [{ dtype: x!.dtype, shape: x!.shape }];
  },
  lower: (e, n) =>
    e.emit('Trilu', [e.name(n.inputs[0]!), e.ints([n.attrs.k])], [e.name(n.outputs[0]!)], {
      upper: n.attrs.upper ? 1 : 0,
    }),
  vjp: ({ grads: [g], attrs }) => (g ? [g.graph.apply1(Trilu, [g], attrs)] : []),
};

/** The lower triangle (j <= i + k) of the last two axes; the rest zero. */
export function tril(x: Tensor, k = 0): Tensor {
  return x.graph.apply1(Trilu, [x], { upper: false, k });
}

export function triu(x: Tensor, k = 0): Tensor {
  return x.graph.apply1(Trilu, [x], { upper: true, k });
}

const OneHot: OpDef<{ depth: number; dtype: DType }> = {
  name: 'oneHot',
  infer: ([idx], { depth, dtype }) => [{ dtype, shape: [...idx!.shape, depth] }],
  lower: (e, n) => {
    const values = e.fresh('onehot_values');
    e.emit('Cast', [e.ints([0, 1])], [values], { to: ONNX_DTYPE[n.attrs.dtype] });
    e.emit('OneHot', [e.name(n.inputs[0]!), e.ints([n.attrs.depth]), values], [e.name(n.outputs[0]!)], {
      axis: -1,
    });
  },
  noGradient: true,
};

export function oneHot(idx: Tensor, depth: number, dtype: DType = 'float32'): Tensor {
  return idx.graph.apply1(OneHot, [idx], { depth, dtype });
}

const Arange: OpDef<{ n: Dim; dtype: DType }> = {
  name: 'arange',
  infer: (_, { n, dtype }) => [{ dtype, shape: [n] }],
  lower: (e, n) => {
    const [n64, limit] = [e.fresh('n'), e.fresh('limit')];
    e.emit('Squeeze', [e.shapeOf([n.attrs.n])], [n64]);
    e.emit('Cast', [n64], [limit], { to: ONNX_DTYPE[n.attrs.dtype] });
    e.emit('Range', [e.scalar(0, n.attrs.dtype), limit, e.scalar(1, n.attrs.dtype)], [e.name(n.outputs[0]!)]);
  },
  noGradient: true,
};

const DimValue: OpDef<{ dim: Dim }> = {
  name: 'dimValue',
  infer: () => [{ dtype: 'int64', shape: [] }],
  lower: (e, n) => e.emit('Reshape', [e.shapeOf([n.attrs.dim]), e.ints([])], [e.name(n.outputs[0]!)]),
  noGradient: true,
};

/** The run-time value of a (possibly symbolic) dim as an int64 scalar. */
export function dimValue(graph: Graph, dim: Dim): Tensor {
  return graph.apply1(DimValue, [], { dim });
}

/** [0, 1, …, n−1]; n may be symbolic. */
export function arange(graph: Graph, n: Dim, dtype: DType = 'int64'): Tensor {
  return graph.apply1(Arange, [], { n, dtype });
}

const TopK: OpDef<{ k: number }> = {
  name: 'topk',
  infer: ([x], { k }) => {
    const shape = [...x!.shape.slice(0, -1), k];
    return [
      { dtype: x!.dtype, shape },
      { dtype: 'int64', shape },
    ];
  },
  lower: (e, n) =>
    e.emit('TopK', [e.name(n.inputs[0]!), e.ints([n.attrs.k])], n.outputs.map(e.name), {
      axis: -1,
      largest: 1,
      sorted: 1,
    }),
  noGradient: true,
};

/** The k largest values along the last axis, sorted, and their indices. */
export function topk(x: Tensor, k: number): [Tensor, Tensor] {
  const [values, indices] = x.graph.apply(TopK, [x], { k });
  return [values!, indices!];
}

const ArgMax: OpDef<{ axis: number; keepdims: boolean }> = {
  name: 'argmax',
  infer: ([x], { axis, keepdims }) => [
    { dtype: 'int64', shape: x!.shape.flatMap((d, i) => (i === axis ? (keepdims ? [1] : []) : [d])) },
  ],
  lower: (e, n) =>
    e.emit('ArgMax', [e.name(n.inputs[0]!)], [e.name(n.outputs[0]!)], {
      axis: n.attrs.axis,
      keepdims: n.attrs.keepdims ? 1 : 0,
      select_last_index: 0,
    }),
  noGradient: true,
};

export function argmax(x: Tensor, axis = -1, keepdims = false): Tensor {
  return x.graph.apply1(ArgMax, [x], { axis: axisOf(axis, x.rank, 'argmax'), keepdims });
}

const RandomUniformLike: OpDef<{ seed: number; low: number; high: number }> = {
  name: 'randomUniform',
  infer: ([x]) => [{ dtype: x!.dtype, shape: x!.shape }],
  lower: (e, n) =>
    e.emit('RandomUniformLike', [e.name(n.inputs[0]!)], [e.name(n.outputs[0]!)], {
      seed: { float: n.attrs.seed },
      low: { float: n.attrs.low },
      high: { float: n.attrs.high },
    }),
  noGradient: true,
};

/**
 * Uniform draws in [low, high) shaped like `like`. The seed fixes the sequence a session draws;
 * for per-request reproducibility, pass uniforms from a seeded PRNG as a graph input instead.
 */
export function randomUniformLike(like: Tensor, seed: number, low = 0, high = 1): Tensor {
  return like.graph.apply1(RandomUniformLike, [like], { seed, low, high });
}

const Multinomial: OpDef<{ samples: number; seed: number }> = {
  name: 'multinomial',
  infer: ([logits], { samples }) => {
    if (logits!.rank !== 2) throw new Error('logits must be [batch, classes]');
    return [{ dtype: 'int64', shape: [logits!.shape[0]!, samples] }];
  },
  lower: (e, n) =>
    e.emit('Multinomial', [e.name(n.inputs[0]!)], [e.name(n.outputs[0]!)], {
      sample_size: n.attrs.samples,
      seed: { float: n.attrs.seed },
      dtype: 7,
    }),
  noGradient: true,
};

/** `samples` class indices per row drawn from softmax(logits). */
export function multinomial(logits: Tensor, samples: number, seed: number): Tensor {
  return logits.graph.apply1(Multinomial, [logits], { samples, seed });
}
