/**
 * Folds K training steps into one ONNX `Loop`, so parameters and optimizer state stay inside
 * the runtime (on the device, with CUDA) between steps and only the K batches go in.
 *
 * The body is the ordinary training-step graph, lowered with a name prefix so it shadows nothing
 * outside. Per iteration it takes batch `i` and learning rate `i` from the stacked outer inputs
 * (`x` of shape [K, ...], `lr` of shape [K]) and carries params, optimizer state and the count of
 * applied steps; a step whose gradient is not finite leaves all three unchanged, as in the single
 * step. Tensors the step only reads (a frozen base under an adapter) are outer-scope values every
 * iteration reads as they are. Loss, gradient norm and the finite flag of every iteration come out
 * as [K] scan outputs.
 */
import type { NodeProto } from '../gen/third_party/onnx/onnx.js';
import { type DType, fromNumbers, ONNX_DTYPE } from './dtype.js';
import { inputName, type Tensor } from './graph.js';
import {
  attribute,
  type CompiledModel,
  type CompileOptions,
  encodeModel,
  graphAttribute,
  graphProto,
  lower,
  tensorProto,
  type ValueSpec,
} from './onnx.js';
import { updatedName } from './optim.js';

export interface LoopSpec {
  /** The step graph's outputs (loss, grad_norm, finite and `<name>.next` per carried value). */
  outputs: Record<string, Tensor>;
  /** Inputs carried from step to step: params and optimizer state. */
  carried: Tensor[];
  /** The step graph's learning-rate and 1-based step-number inputs. */
  lr: Tensor;
  step: Tensor;
  /** Per-step inputs (the batch); stacked along a new leading axis K outside. */
  perStep: Tensor[];
  /** Inputs every step reads unchanged (not stacked, not carried). */
  frozen?: Tensor[];
}

const BODY = 'body/';
const SCAN = ['loss', 'grad_norm', 'finite'];

function node(opType: string, input: string[], output: string[], extra: Partial<NodeProto> = {}): NodeProto {
  return { input, output, name: output[0]!, opType, domain: '', docString: '', attribute: [], ...extra };
}

function scalarInit(name: string, value: number, dtype: DType) {
  return tensorProto(name, fromNumbers(dtype, [value]), dtype, []);
}

export function compileTrainLoop(
  spec: LoopSpec,
  name = 'train_loop',
  options: CompileOptions = {},
): CompiledModel {
  const stepDtype = spec.step.dtype;
  const body = lower(spec.lr.graph, spec.outputs, BODY, options);

  // Values the body reads: the iteration's slice of each stacked input, lr[i], and step = done + 1.
  const prologue: NodeProto[] = [
    node('Gather', [inputName(spec.lr), `${BODY}iter`], [BODY + inputName(spec.lr)], {
      attribute: [attribute('axis', 0)],
    }),
    node('Add', [`${BODY}steps_done`, `${BODY}one`], [BODY + inputName(spec.step)]),
    ...spec.perStep.map((t) =>
      node('Gather', [inputName(t), `${BODY}iter`], [BODY + inputName(t)], {
        attribute: [attribute('axis', 0)],
      }),
    ),
    ...(spec.frozen ?? []).map((t) => node('Identity', [inputName(t)], [BODY + inputName(t)])),
  ];
  const epilogue: NodeProto[] = [
    node('Identity', [`${BODY}cond`], [`${BODY}cond_out`]),
    node('Cast', [`${BODY}finite`], [`${BODY}finite_bool`], {
      attribute: [attribute('to', ONNX_DTYPE.bool)],
    }),
    node(
      'Where',
      [`${BODY}finite_bool`, BODY + inputName(spec.step), `${BODY}steps_done`],
      [`${BODY}steps_done.next`],
    ),
  ];

  const carried: ValueSpec[] = spec.carried.map((t) => ({
    name: inputName(t),
    dtype: t.dtype,
    shape: t.shape,
  }));
  const bodyGraph = graphProto('train_step', {
    nodes: [...prologue, ...body.nodes, ...epilogue],
    initializers: [...body.initializers, scalarInit(`${BODY}one`, 1, stepDtype)],
    inputs: [
      { name: `${BODY}iter`, dtype: 'int64', shape: [] },
      { name: `${BODY}cond`, dtype: 'bool', shape: [] },
      ...carried.map((c) => ({ ...c, name: BODY + c.name })),
      { name: `${BODY}steps_done`, dtype: stepDtype, shape: [] },
    ],
    outputs: [
      { name: `${BODY}cond_out`, dtype: 'bool', shape: [] },
      ...carried.map((c) => ({ ...c, name: BODY + updatedName(c.name) })),
      { name: `${BODY}steps_done.next`, dtype: stepDtype, shape: [] },
      ...SCAN.map((s) => {
        const t = spec.outputs[s]!;
        return { name: BODY + s, dtype: t.dtype, shape: t.shape };
      }),
    ],
  });

  const outer: NodeProto[] = [
    node('Shape', [inputName(spec.lr)], ['trip_count_1d']),
    node('Squeeze', ['trip_count_1d'], ['trip_count']),
    node(
      'Loop',
      ['trip_count', '', ...carried.map((c) => c.name), 'steps_done'],
      [...carried.map((c) => updatedName(c.name)), 'steps_done.next', ...SCAN],
      { attribute: [graphAttribute('body', bodyGraph)] },
    ),
  ];
  return encodeModel(name, {
    nodes: outer,
    initializers: [],
    inputs: [
      ...carried,
      { name: 'steps_done', dtype: stepDtype, shape: [] },
      { name: inputName(spec.lr), dtype: spec.lr.dtype, shape: ['K'] },
      ...spec.perStep.map((t) => ({ name: inputName(t), dtype: t.dtype, shape: ['K', ...t.shape] })),
      ...(spec.frozen ?? []).map((t) => ({ name: inputName(t), dtype: t.dtype, shape: t.shape })),
    ],
    outputs: [
      ...carried.map((c) => ({ ...c, name: updatedName(c.name) })),
      { name: 'steps_done.next', dtype: stepDtype, shape: [] },
      ...SCAN.map((s) => {
        const t = spec.outputs[s]!;
        return { name: s, dtype: t.dtype, shape: ['K', ...t.shape] };
      }),
    ],
  });
}

/** What one iteration of a general loop reads and writes (compileLoop). */
export interface LoopProgram {
  /**
   * Values carried from one iteration to the next: the graph input the body reads, and the
   * tensor that replaces it. A carried value may change shape between iterations (a KV cache
   * that grows by a column). Outside, `input`'s name gives the first value and `<name>.next`
   * the last.
   */
  carried: { input: Tensor; next: Tensor }[];
  /** Graph inputs the body reads one slice of per iteration: [K, ...] outside, K the trip count. */
  sliced: Tensor[];
  /** Graph inputs every iteration reads as given (weights, settings). */
  outer: Tensor[];
  /** Outputs collected from every iteration: [iterations, ...] outside, under their names. */
  scanned: Record<string, Tensor>;
  /** A bool scalar: whether to go on after this iteration. Absent: every one of the K. */
  goOn?: Tensor;
}

/**
 * An ONNX Loop of `program`'s body, run up to K times (K: the first sliced input's leading dim)
 * in one runtime call: what a provider whose state crosses to the device at every run (cuda,
 * from Node) needs to decode a whole generation at the price of one crossing.
 */
export function compileLoop(program: LoopProgram, name: string, options: CompileOptions = {}): CompiledModel {
  const first = program.sliced[0];
  if (!first) throw new Error('compileLoop: the trip count is read from a sliced input; give one');
  const outputs: Record<string, Tensor> = { ...program.scanned };
  for (const { input, next } of program.carried) outputs[updatedName(inputName(input))] = next;
  if (program.goOn) outputs.go_on = program.goOn;
  const body = lower(first.graph, outputs, BODY, options);
  const spec = (t: Tensor, n = inputName(t)): ValueSpec => ({ name: n, dtype: t.dtype, shape: t.shape });
  const carried = program.carried.map(({ input }) => spec(input));
  const scanned = Object.entries(program.scanned).map(([n, t]) => spec(t, n));
  const prologue: NodeProto[] = [
    ...program.sliced.map((t) =>
      node('Gather', [inputName(t), `${BODY}iter`], [BODY + inputName(t)], {
        attribute: [attribute('axis', 0)],
      }),
    ),
    ...program.outer.map((t) => node('Identity', [inputName(t)], [BODY + inputName(t)])),
  ];
  const goOn = program.goOn ? [] : [node('Identity', [`${BODY}cond`], [`${BODY}go_on`])];
  const bodyGraph = graphProto(name, {
    nodes: [...prologue, ...body.nodes, ...goOn],
    initializers: body.initializers,
    inputs: [
      { name: `${BODY}iter`, dtype: 'int64', shape: [] },
      { name: `${BODY}cond`, dtype: 'bool', shape: [] },
      ...carried.map((c) => ({ ...c, name: BODY + c.name })),
    ],
    outputs: [
      { name: `${BODY}go_on`, dtype: 'bool', shape: [] },
      ...carried.map((c) => ({ ...c, name: BODY + updatedName(c.name) })),
      ...scanned.map((s) => ({ ...s, name: BODY + s.name })),
    ],
  });
  return encodeModel(name, {
    nodes: [
      node('Shape', [inputName(first)], ['trip_count_1d'], { attribute: [attribute('end', 1)] }),
      node('Squeeze', ['trip_count_1d'], ['trip_count']),
      // A condition in, so that the body's go_on can end the loop early (a for loop without
      // one ignores it).
      node('Greater', ['trip_count', 'zero'], ['go_on_first']),
      node(
        'Loop',
        ['trip_count', 'go_on_first', ...carried.map((c) => c.name)],
        [...carried.map((c) => updatedName(c.name)), ...scanned.map((s) => s.name)],
        { attribute: [graphAttribute('body', bodyGraph)] },
      ),
    ],
    initializers: [tensorProto('zero', BigInt64Array.of(0n), 'int64', [])],
    inputs: [
      ...carried,
      ...program.sliced.map((t) => ({ ...spec(t), shape: ['K', ...t.shape] })),
      ...program.outer.map((t) => spec(t)),
    ],
    outputs: [
      ...carried.map((c) => ({ ...c, name: updatedName(c.name) })),
      // Up to K rows: fewer when go_on ended the loop early.
      ...scanned.map((s) => ({ ...s, shape: ['iterations', ...s.shape] })),
    ],
  });
}
