/**
 * Lowers a traced graph to an ONNX ModelProto: only nodes that reach a requested output are
 * emitted (dead-code elimination), constants become initializers (small int constants shared),
 * static shapes are folded to constants at trace time, and a symbolic dimension is read once
 * from the input that binds it.
 */

import { Buffer } from 'node:buffer';
import {
  AttributeProto_AttributeType as AT,
  type AttributeProto,
  GraphProto,
  ModelProto,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from '../gen/third_party/onnx/onnx.js';
import { type DType, fromNumbers, ONNX_DTYPE, type TypedArray } from './dtype.js';
import {
  type ConstantAttrs,
  ConstantOp,
  type Emitter,
  type Graph,
  type InputAttrs,
  InputOp,
  MS_DOMAIN,
  type OnnxAttr,
  reachable,
  type Tensor,
} from './graph.js';
import type { Shape } from './shape.js';
import { dimTerms } from './shape.js';

/** The opset duel targets: supported by onnxruntime-node 1.30 on CPU, CUDA and WebGPU. */
export const OPSET = 18;
const IR_VERSION = 8;

export interface CompiledModel {
  bytes: Uint8Array;
  inputs: { name: string; dtype: DType; shape: Shape }[];
  outputs: { name: string; dtype: DType; shape: Shape }[];
  /** ONNX nodes emitted (after dead-code elimination). */
  nodeCount: number;
}

function valueInfo(name: string, dtype: DType, shape: Shape): ValueInfoProto {
  return {
    name,
    docString: '',
    type: {
      denotation: '',
      value: {
        $case: 'tensorType',
        tensorType: {
          elemType: ONNX_DTYPE[dtype],
          shape: {
            dim: shape.map((d) => ({
              denotation: '',
              value:
                typeof d === 'number'
                  ? { $case: 'dimValue' as const, dimValue: d }
                  : { $case: 'dimParam' as const, dimParam: d },
            })),
          },
        },
      },
    },
  };
}

export function tensorProto(
  name: string,
  data: TypedArray,
  dtype: DType,
  dims: readonly number[],
): TensorProto {
  return {
    ...TENSOR_DEFAULTS,
    name,
    dataType: ONNX_DTYPE[dtype],
    dims: [...dims],
    rawData: Buffer.from(data.buffer, data.byteOffset, data.byteLength),
  };
}

const TENSOR_DEFAULTS: TensorProto = {
  dims: [],
  dataType: 0,
  floatData: [],
  int32Data: [],
  stringData: [],
  int64Data: [],
  name: '',
  docString: '',
  rawData: Buffer.alloc(0),
  doubleData: [],
  uint64Data: [],
};

export function attribute(name: string, value: OnnxAttr): AttributeProto {
  const a: AttributeProto = {
    name,
    refAttrName: '',
    docString: '',
    type: AT.UNDEFINED,
    f: 0,
    i: 0,
    s: Buffer.alloc(0),
    t: undefined,
    g: undefined,
    floats: [],
    ints: [],
    strings: [],
    tensors: [],
    graphs: [],
  };
  if (typeof value === 'number') {
    if (!Number.isInteger(value))
      throw new Error(`attribute ${name}: ${value} is not an integer; use { float }`);
    return { ...a, type: AT.INT, i: value };
  }
  if (typeof value === 'string') return { ...a, type: AT.STRING, s: Buffer.from(value) };
  if (Array.isArray(value)) return { ...a, type: AT.INTS, ints: value };
  if ('float' in value) return { ...a, type: AT.FLOAT, f: value.float };
  if ('floats' in value) return { ...a, type: AT.FLOATS, floats: value.floats };
  throw new Error(`attribute ${name}: unsupported value`);
}

export interface ValueSpec {
  name: string;
  dtype: DType;
  shape: Shape;
}

/** A lowered graph before it is wrapped in a model: what a Loop body is made of too. */
export interface LoweredGraph {
  nodes: NodeProto[];
  initializers: TensorProto[];
  inputs: ValueSpec[];
  outputs: ValueSpec[];
}

/** A GRAPH attribute (a Loop's or If's body). */
export function graphAttribute(name: string, g: GraphProto): AttributeProto {
  return { ...attribute(name, 0), type: AT.GRAPH, i: 0, g };
}

/** Compiles the part of `graph` that computes `outputs` into ONNX bytes. */
export interface CompileOptions {
  /**
   * The execution provider the model will run on. The graph means the same on every provider;
   * only ops a provider has no kernel for are spelt otherwise (ONNX Runtime 1.30's WebGPU
   * provider has no LogSoftmax, which it would run on the CPU with the logits copied across).
   */
  provider?: string;
}

export function compile(
  graph: Graph,
  outputs: Record<string, Tensor>,
  name = 'duel',
  options: CompileOptions = {},
): CompiledModel {
  const lowered = lower(graph, outputs, '', options);
  return encodeModel(name, lowered);
}

/** Wraps lowered nodes in a ModelProto (opset OPSET) and encodes it. */
export function encodeModel(name: string, g: LoweredGraph): CompiledModel {
  const model = ModelProto.fromPartial({
    irVersion: IR_VERSION,
    opsetImport: [
      { domain: '', version: OPSET },
      ...(g.nodes.some((n) => n.domain === MS_DOMAIN) ? [{ domain: MS_DOMAIN, version: 1 }] : []),
    ],
    producerName: 'duel',
    producerVersion: '0.1',
    graph: graphProto(name, g),
  });
  return {
    bytes: ModelProto.encode(model).finish(),
    inputs: g.inputs,
    outputs: g.outputs,
    nodeCount: g.nodes.length,
  };
}

export function graphProto(name: string, g: LoweredGraph): GraphProto {
  return GraphProto.fromPartial({
    name,
    node: g.nodes,
    initializer: g.initializers,
    input: g.inputs.map((i) => valueInfo(i.name, i.dtype, i.shape)),
    output: g.outputs.map((o) => valueInfo(o.name, o.dtype, o.shape)),
  });
}

/**
 * Lowers the part of `graph` that computes `outputs`. Every value name gets `prefix`, so a
 * lowered graph can sit inside another as a subgraph without shadowing the outer names.
 */
export function lower(
  graph: Graph,
  outputs: Record<string, Tensor>,
  prefix = '',
  options: CompileOptions = {},
): LoweredGraph {
  // Dead-code elimination: only nodes that reach an output are lowered.
  const keep = reachable(Object.values(outputs));

  const nodes: NodeProto[] = [];
  const initializers: TensorProto[] = [];
  const intCache = new Map<string, string>();
  const symbolCache = new Map<string, string>();
  let counter = 0;

  // A symbol is read once from the input that binds it; an expression ('B*T', 'P+1') is built
  // from its symbols with int64 Mul/Add, also once.
  const symbol = (d: string): string => {
    const cached = symbolCache.get(d);
    if (cached) return cached;
    const src = graph.symbols.get(d);
    let n: string;
    if (src) {
      n = `${prefix}dim_${symbolCache.size}`;
      e.emit('Shape', [e.name(src.input)], [n], { start: src.axis, end: src.axis + 1 });
    } else {
      const terms = dimTerms(d);
      if (terms.length === 1 && terms[0]!.coef === 1 && terms[0]!.syms.length === 1)
        throw new Error(`symbolic dim ${d} is bound by no graph input`);
      const combine = (op: string, xs: string[]) =>
        xs.reduce((acc, x) => {
          const out = e.fresh(`dim_${op.toLowerCase()}`);
          e.emit(op, [acc, x], [out]);
          return out;
        });
      n = combine(
        'Add',
        terms.map((t) =>
          combine('Mul', [
            ...(t.coef !== 1 || t.syms.length === 0 ? [e.ints([t.coef])] : []),
            ...t.syms.map(symbol),
          ]),
        ),
      );
    }
    symbolCache.set(d, n);
    return n;
  };

  // A node's output that is a graph output is written under the output's name: an Identity in
  // between would be a node of its own, and one ONNX Runtime keeps (a device copy, a dispatch)
  // where the value also feeds other nodes, as a decoder's new KV cache does. Inputs, constants and
  // a tensor's second output name still go through an Identity.
  const outputName = new Map<Tensor, string>();
  for (const [outName, t] of Object.entries(outputs)) {
    if (t.node.op !== InputOp && t.node.op !== ConstantOp && !outputName.has(t)) outputName.set(t, outName);
  }

  const e: Emitter = {
    provider: options.provider,
    name: (t) =>
      prefix +
      (t.node.op === InputOp
        ? (t.node.attrs as InputAttrs).name
        : (outputName.get(t) ?? `t${t.node.id}_${t.index}`)),
    fresh: (hint) => `${prefix}${hint}_${counter++}`,
    emit(opType, inputs, outs, attrs = {}, domain?: string) {
      nodes.push({
        input: inputs,
        output: outs,
        name: `${opType}_${nodes.length}`,
        opType,
        domain: domain ?? '',
        docString: '',
        attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
      });
    },
    ints(values) {
      const k = values.join(',');
      let n = intCache.get(k);
      if (!n) {
        n = `${prefix}ints_${intCache.size}`;
        intCache.set(k, n);
        initializers.push(tensorProto(n, BigInt64Array.from(values.map(BigInt)), 'int64', [values.length]));
      }
      return n;
    },
    scalar(value, dtype) {
      const n = `${prefix}scalar_${counter++}`;
      initializers.push(tensorProto(n, fromNumbers(dtype, [value]), dtype, []));
      return n;
    },
    shapeOf(shape) {
      if (shape.every((d) => typeof d === 'number')) return e.ints(shape as number[]);
      const parts = shape.map((d) => (typeof d === 'number' ? e.ints([d]) : symbol(d)));
      const out = e.fresh('shape');
      e.emit('Concat', parts, [out], { axis: 0 });
      return out;
    },
  };

  for (const node of graph.nodes) {
    if (!keep.has(node.id)) continue;
    if (node.op === ConstantOp) {
      const a = node.attrs as ConstantAttrs;
      initializers.push(tensorProto(e.name(node.outputs[0]!), a.data, a.dtype, a.shape as number[]));
      continue;
    }
    node.op.lower(e, node as never);
  }

  const outs = Object.entries(outputs).map(([outName, t]) => {
    if (outputName.get(t) !== outName) e.emit('Identity', [e.name(t)], [prefix + outName]);
    return { name: prefix + outName, dtype: t.dtype, shape: t.shape };
  });
  const ins = graph.inputs.map((t) => {
    const a = t.node.attrs as InputAttrs;
    return { name: prefix + a.name, dtype: a.dtype, shape: a.shape };
  });
  return { nodes, initializers, inputs: ins, outputs: outs };
}
