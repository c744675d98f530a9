/**
 * The traced program. A Graph is a list of Nodes in creation order (which is a topological
 * order); a Tensor is one output of one Node. Every primitive is an OpDef that keeps its facets
 * together: shape/dtype inference (run at trace time, so errors name the op and shapes), ONNX
 * lowering, and its vector-Jacobian rule written with the same tensor API.
 */
import type { DType, TypedArray } from './dtype.js';
import type { CheckpointSegment } from './ops/checkpoint.js';
import { type Shape, shapeString } from './shape.js';

export interface TensorType {
  dtype: DType;
  shape: Shape;
}

export class Tensor {
  constructor(
    readonly graph: Graph,
    readonly node: Node,
    readonly index: number,
    readonly dtype: DType,
    readonly shape: Shape,
  ) {}

  get rank(): number {
    return this.shape.length;
  }

  toString(): string {
    return `${this.node.op.name}#${this.node.id}:${this.index} ${this.dtype}${shapeString(this.shape)}`;
  }
}

/** The opset domain of ONNX Runtime's own operators (its fused kernels), besides ONNX's. */
export const MS_DOMAIN = 'com.microsoft';

/** What a lowering writes: ONNX nodes, constants, and runtime shape values. */
export interface Emitter {
  /** The ONNX value name of a traced tensor. */
  name(t: Tensor): string;
  /** A fresh ONNX value name for an intermediate. */
  fresh(hint: string): string;
  /**
   * Emits one ONNX node; attrs are converted by their JS type (number[] of ints → INTS, ...). A
   * `domain` other than ONNX's own is imported into the model (ONNX Runtime's com.microsoft).
   */
  emit(
    opType: string,
    inputs: string[],
    outputs: string[],
    attrs?: Record<string, OnnxAttr>,
    domain?: typeof MS_DOMAIN,
  ): void;
  /** An int64 1-D constant. */
  ints(values: readonly number[]): string;
  /** A 0-D constant. */
  scalar(value: number, dtype: DType): string;
  /** A 1-D int64 tensor holding `shape` at run time (symbols read from the inputs that define them). */
  shapeOf(shape: Shape): string;
  /**
   * The execution provider the model is compiled for, when known: a lowering may spell its op
   * with kernels that provider has (onnx.ts, CompileOptions).
   */
  readonly provider: string | undefined;
}

export type OnnxAttr = number | string | number[] | { float: number } | { floats: number[] };

/** The vocabulary of a vector-Jacobian rule: the node's inputs, outputs, and incoming gradients. */
export interface VjpContext<A> {
  inputs: Tensor[];
  outputs: Tensor[];
  /** Gradient of the loss w.r.t. each output; undefined where the output does not reach the loss. */
  grads: (Tensor | undefined)[];
  attrs: A;
}

export interface OpDef<A = Record<string, never>> {
  name: string;
  infer(inputs: Tensor[], attrs: A): TensorType[];
  lower(e: Emitter, node: Node<A>): void;
  /** Gradient of the loss w.r.t. each input (undefined: no gradient flows there). Absent: not differentiable. */
  vjp?(ctx: VjpContext<A>): (Tensor | undefined)[];
  /** Ops whose outputs never carry gradient (comparisons, argmax, random draws, stop-gradient). */
  noGradient?: boolean;
}

export interface Node<A = unknown> {
  id: number;
  op: OpDef<A>;
  inputs: Tensor[];
  attrs: A;
  outputs: Tensor[];
}

/** Where a symbolic dimension can be read at run time. */
export interface SymbolSource {
  input: Tensor;
  axis: number;
}

export class Graph {
  readonly nodes: Node[] = [];
  readonly inputs: Tensor[] = [];
  readonly symbols = new Map<string, SymbolSource>();
  /** Segments whose intermediates the backward pass recomputes (ops/checkpoint.ts). */
  readonly checkpoints: CheckpointSegment[] = [];
  /** Whether a checkpointed segment is being traced now (they do not nest). */
  tracingCheckpoint = false;
  private readonly inputNames = new Set<string>();

  /** Applies an op: infers output types (throwing with the op named) and records the node. */
  apply<A>(op: OpDef<A>, inputs: Tensor[], attrs: A): Tensor[] {
    for (const t of inputs) {
      if (t.graph !== this) throw new Error(`${op.name}: input ${t} belongs to another graph`);
    }
    let types: TensorType[];
    try {
      types = op.infer(inputs, attrs);
    } catch (error) {
      const shapes = inputs.map((t) => `${t.dtype}${shapeString(t.shape)}`).join(', ');
      throw new Error(`${op.name}(${shapes}): ${(error as Error).message}`, { cause: error });
    }
    const node: Node<A> = { id: this.nodes.length, op, inputs, attrs, outputs: [] };
    node.outputs = types.map((t, i) => new Tensor(this, node as Node, i, t.dtype, t.shape));
    this.nodes.push(node as Node);
    return node.outputs;
  }

  apply1<A>(op: OpDef<A>, inputs: Tensor[], attrs: A): Tensor {
    return this.apply(op, inputs, attrs)[0]!;
  }

  /** A graph input (a batch tensor, a parameter, optimizer state). Symbolic dims are bound here. */
  input(name: string, dtype: DType, shape: Shape): Tensor {
    if (this.inputNames.has(name)) throw new Error(`input ${JSON.stringify(name)} is declared twice`);
    this.inputNames.add(name);
    const t = this.apply1(InputOp, [], { name, dtype, shape });
    shape.forEach((d, axis) => {
      if (typeof d === 'string' && !this.symbols.has(d)) this.symbols.set(d, { input: t, axis });
    });
    this.inputs.push(t);
    return t;
  }

  constant(data: TypedArray, dtype: DType, shape: Shape): Tensor {
    return this.apply1(ConstantOp, [], { data, dtype, shape });
  }
}

/** Ids of the nodes that `outputs` depend on (themselves included). */
export function reachable(outputs: Tensor[]): Set<number> {
  const seen = new Set<number>();
  const stack = outputs.map((t) => t.node);
  while (stack.length > 0) {
    const node = stack.pop()!;
    if (seen.has(node.id)) continue;
    seen.add(node.id);
    for (const t of node.inputs) stack.push(t.node);
  }
  return seen;
}

/** The name a graph input was declared with (Graph.input). */
export function inputName(t: Tensor): string {
  if (t.node.op !== InputOp) throw new Error(`${t} is not a graph input`);
  return (t.node.attrs as InputAttrs).name;
}

export interface InputAttrs {
  name: string;
  dtype: DType;
  shape: Shape;
}

export const InputOp: OpDef<InputAttrs> = {
  name: 'input',
  infer: (_, a) => [{ dtype: a.dtype, shape: a.shape }],
  lower: () => {},
  vjp: () => [],
};

export interface ConstantAttrs {
  data: TypedArray;
  dtype: DType;
  shape: Shape;
}

export const ConstantOp: OpDef<ConstantAttrs> = {
  name: 'constant',
  infer: (_, a) => [{ dtype: a.dtype, shape: a.shape }],
  lower: () => {},
  noGradient: true,
};
