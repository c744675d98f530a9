/** Batched matmul and the indexing primitives (embedding rows, token log-probs, their scatters). */
import { type DType, ONNX_DTYPE } from '../dtype.js';
import type { Emitter, OpDef, Tensor } from '../graph.js';
import { broadcast, type Dim, type Shape, shapeString } from '../shape.js';
import { unbroadcast } from './helpers.js';
import { reduceSum, reshape, squeeze, transposeLast, unsqueeze } from './reduce-layout.js';

// ── matmul ─────────────────────────────────────────────────────────────────
const MatMul: OpDef<Record<string, never>> = {
  name: 'matmul',
  infer([a, b]) {
    if (a!.rank < 2 || b!.rank < 2)
      throw new Error('both operands need rank >= 2 ([..., m, k] @ [..., k, n])');
    if (a!.dtype !== b!.dtype) throw new Error(`dtypes differ: ${a!.dtype}, ${b!.dtype}`);
    const k1 = a!.shape[a!.rank - 1];
    const k2 = b!.shape[b!.rank - 2];
    if (k1 !== k2) throw new Error(`inner dims differ: ${k1} vs ${k2}`);
    const batch = broadcast(a!.shape.slice(0, -2), b!.shape.slice(0, -2));
    if (!batch) throw new Error('batch dims do not broadcast');
    return [{ dtype: a!.dtype, shape: [...batch, a!.shape[a!.rank - 2]!, b!.shape[b!.rank - 1]!] }];
  },
  lower: (e, n) => e.emit('MatMul', n.inputs.map(e.name), [e.name(n.outputs[0]!)]),
  // Y = A·B: dA = dY·Bᵀ, dB = Aᵀ·dY, each summed over the batch dims it was broadcast along.
  vjp: ({ inputs: [a, b], grads: [g] }) =>
    g
      ? [
          unbroadcast(matmul(g, transposeLast(b!)), a!.shape),
          unbroadcast(matmul(transposeLast(a!), g), b!.shape),
        ]
      : [],
};

export function matmul(a: Tensor, b: Tensor): Tensor {
  return a.graph.apply1(MatMul, [a, b], {} as Record<string, never>);
}

// ── linear: x·wᵀ + b as one Gemm ─────────────────────────────────────────────
interface GemmAttrs {
  transA: boolean;
  transB: boolean;
}

/** op(A)·op(B) (+ C) of 2-D operands, op transposing where asked: ONNX Gemm. */
const Gemm: OpDef<GemmAttrs> = {
  name: 'gemm',
  infer([a, b, c], { transA, transB }) {
    if (a!.rank !== 2 || b!.rank !== 2) throw new Error('both operands need rank 2');
    if (a!.dtype !== b!.dtype || (c && c.dtype !== a!.dtype)) throw new Error('dtypes differ');
    const [m, k1] = transA ? [a!.shape[1]!, a!.shape[0]!] : [a!.shape[0]!, a!.shape[1]!];
    const [k2, n] = transB ? [b!.shape[1]!, b!.shape[0]!] : [b!.shape[0]!, b!.shape[1]!];
    if (k1 !== k2) throw new Error(`inner dims differ: ${k1} vs ${k2}`);
    if (c && (c.rank !== 1 || c.shape[0] !== n)) throw new Error(`bias must be [${n}], got ${c}`);
    return [{ dtype: a!.dtype, shape: [m, n] }];
  },
  lower: (e, n) =>
    e.emit('Gemm', n.inputs.map(e.name), [e.name(n.outputs[0]!)], {
      transA: n.attrs.transA ? 1 : 0,
      transB: n.attrs.transB ? 1 : 0,
    }),
  // y = x·wᵀ + b: dx = g·w, dw = gᵀ·x, db = Σ_rows g — each one Gemm (or a sum), no Transpose.
  vjp: ({ inputs: [x, w, b], grads: [g], attrs }) => {
    if (!g) return [];
    if (attrs.transA || !attrs.transB) throw new Error('gemm: only the linear form (x·wᵀ) has a gradient');
    const gemm = (p: Tensor, q: Tensor, transA: boolean) =>
      p.graph.apply1(Gemm, [p, q], { transA, transB: false });
    return [gemm(g, w!, false), gemm(g, x!, true), ...(b ? [reduceSum(g, [0])] : [])];
  },
};

/**
 * x·wᵀ (+ b) for a weight w [out, in] in PyTorch's layout, as one ONNX Gemm whose transpose flag
 * reads w in place: matmul(x, transposeLast(w)) costs a Transpose node in the forward pass and
 * three more in the backward, and on a GPU each node is a dispatch. Its gradients are Gemms too.
 * x [..., in] is flattened to rows and the result shaped back.
 */
export function linear(x: Tensor, w: Tensor, b?: Tensor): Tensor {
  if (w.rank !== 2) throw new Error(`linear: weight must be [out, in], got ${w}`);
  const rows = x.rank === 2 ? x : reshape(x, [-1, w.shape[1]!]);
  const y = x.graph.apply1(Gemm, b ? [rows, w, b] : [rows, w], { transA: false, transB: true });
  return x.rank === 2 ? y : reshape(y, [...x.shape.slice(0, -1), w.shape[0]!]);
}

// ── zeros of a (possibly symbolic) shape ─────────────────────────────────────
const Zeros: OpDef<{ dtype: DType; shape: Dim[] }> = {
  name: 'zeros',
  infer: (_, a) => [{ dtype: a.dtype, shape: a.shape }],
  lower: (e, n) => {
    const zero = e.fresh('zero');
    e.emit('Cast', [e.ints([0])], [zero], { to: ONNX_DTYPE[n.attrs.dtype] });
    const scalarZero = e.fresh('zero_scalar');
    e.emit('Reshape', [zero, e.ints([])], [scalarZero]);
    e.emit('Expand', [scalarZero, e.shapeOf(n.attrs.shape)], [e.name(n.outputs[0]!)]);
  },
  noGradient: true,
};

export function zeros(graphOf: Tensor, shape: Shape, dtype: DType = graphOf.dtype): Tensor {
  return graphOf.graph.apply1(Zeros, [], { dtype, shape: [...shape] });
}

// ── gather rows (embedding lookup) and its adjoint ───────────────────────────
const Gather: OpDef<Record<string, never>> = {
  name: 'gather',
  infer([table, idx]) {
    if (idx!.dtype !== 'int64' && idx!.dtype !== 'int32')
      throw new Error(`indices must be integers, got ${idx!.dtype}`);
    return [{ dtype: table!.dtype, shape: [...idx!.shape, ...table!.shape.slice(1)] }];
  },
  lower: (e, n) => e.emit('Gather', n.inputs.map(e.name), [e.name(n.outputs[0]!)], { axis: 0 }),
  vjp: ({ inputs: [table, idx], grads: [g] }) =>
    g ? [scatterAddRows(zeros(table!, table!.shape), idx!, g)] : [],
};

/** table[idx]: rows of `table` (axis 0) at integer indices of any shape. */
export function gather(table: Tensor, idx: Tensor): Tensor {
  return table.graph.apply1(Gather, [table, idx], {} as Record<string, never>);
}

/**
 * Emits a scatter-add (`emit(base, updates, out)`) that adds in float32 when its operands are
 * float16: neither ONNX Runtime's cpu nor its webgpu ScatterND/ScatterElements reduces in half,
 * and a sum of many half updates (an embedding row's gradient over a batch) would lose them.
 */
function addingInFloat32(
  e: Emitter,
  n: { inputs: Tensor[]; outputs: Tensor[] },
  emit: (base: string, updates: string, out: string) => void,
): void {
  const [base, , upd] = n.inputs;
  const out = e.name(n.outputs[0]!);
  if (base!.dtype !== 'float16') {
    emit(e.name(base!), e.name(upd!), out);
    return;
  }
  const wide = (t: Tensor) => {
    const name = e.fresh('wide');
    e.emit('Cast', [e.name(t)], [name], { to: ONNX_DTYPE.float32 });
    return name;
  };
  const sum = e.fresh('sum32');
  emit(wide(base!), wide(upd!), sum);
  e.emit('Cast', [sum], [out], { to: ONNX_DTYPE.float16 });
}

const ScatterAddRows: OpDef<Record<string, never>> = {
  name: 'scatterAddRows',
  infer([base, idx, upd]) {
    const want = [...idx!.shape, ...base!.shape.slice(1)];
    if (shapeString(upd!.shape) !== shapeString(want))
      throw new Error(`updates must be ${shapeString(want)}`);
    return [{ dtype: base!.dtype, shape: base!.shape }];
  },
  lower: (e, n) => {
    const idx64 = e.fresh('idx');
    e.emit('Cast', [e.name(n.inputs[1]!)], [idx64], { to: 7 });
    const nd = e.fresh('idx_nd');
    e.emit('Unsqueeze', [idx64, e.ints([-1])], [nd]);
    addingInFloat32(e, n, (base, upd, out) =>
      e.emit('ScatterND', [base, nd, upd], [out], { reduction: 'add' }),
    );
  },
  vjp: ({ inputs: [, idx], grads: [g] }) => (g ? [g, undefined, gather(g, idx!)] : []),
};

/** base with `upd[i]` added to row `idx[i]` (repeated indices accumulate). */
export function scatterAddRows(base: Tensor, idx: Tensor, upd: Tensor): Tensor {
  return base.graph.apply1(ScatterAddRows, [base, idx, upd], {} as Record<string, never>);
}

// ── gatherElements (token log-probs) and its adjoint ─────────────────────────
const GatherElements: OpDef<{ axis: number }> = {
  name: 'gatherElements',
  infer([x, idx]) {
    if (idx!.rank !== x!.rank) throw new Error('indices must have the rank of the data');
    return [{ dtype: x!.dtype, shape: idx!.shape }];
  },
  lower: (e, n) =>
    e.emit('GatherElements', n.inputs.map(e.name), [e.name(n.outputs[0]!)], { axis: n.attrs.axis }),
  vjp: ({ inputs: [x, idx], grads: [g], attrs: { axis } }) =>
    g ? [scatterElementsAdd(zeros(x!, x!.shape), idx!, g, axis)] : [],
};

export function gatherElements(x: Tensor, idx: Tensor, axis: number): Tensor {
  return x.graph.apply1(GatherElements, [x, idx], { axis: axis < 0 ? axis + x.rank : axis });
}

const ScatterElementsAdd: OpDef<{ axis: number }> = {
  name: 'scatterElementsAdd',
  infer: ([base]) => [{ dtype: base!.dtype, shape: base!.shape }],
  lower: (e, n) =>
    addingInFloat32(e, n, (base, upd, out) =>
      e.emit('ScatterElements', [base, e.name(n.inputs[1]!), upd], [out], {
        axis: n.attrs.axis,
        reduction: 'add',
      }),
    ),
  vjp: ({ inputs: [, idx], grads: [g], attrs: { axis } }) =>
    g ? [g, undefined, gatherElements(g, idx!, axis)] : [],
};

export function scatterElementsAdd(base: Tensor, idx: Tensor, upd: Tensor, axis: number): Tensor {
  return base.graph.apply1(ScatterElementsAdd, [base, idx, upd], {
    axis: axis < 0 ? axis + base.rank : axis,
  });
}

/** x[..., idx] picked along the last axis: [..., V] with int [...] → [...]. */
export function takeLast(x: Tensor, idx: Tensor): Tensor {
  return squeeze(gatherElements(x, unsqueeze(idx, -1), -1), -1);
}
