/**
 * Gradient checkpointing (rematerialisation): a segment of the forward pass whose intermediates
 * the backward pass does not keep. `grad` (autodiff.ts) traces the segment a second time where its
 * gradient is taken, and the rules read that copy, so ONNX Runtime frees the first copy's tensors
 * as soon as the forward pass is past them. A transformer keeps one hidden state per layer instead
 * of every projection, attention score and MLP activation; the price is one more forward pass.
 *
 * ONNX has no control dependencies, so the copy is tied to the backward pass through data: its
 * inputs pass through `after`, which adds a zero computed from the incoming gradient. That keeps
 * ONNX Runtime from running the copy early (which would hold its tensors as long as before) and
 * from merging it with the original (common-subexpression elimination), since its inputs differ.
 */
import { isFloat, ONNX_DTYPE } from '../dtype.js';
import type { OpDef, Tensor } from '../graph.js';
import { like } from './helpers.js';

const RANDOM = new Set(['randomUniform', 'multinomial']);

/** A checkpointed segment: the node ids it traced, [start, end), and the tensors it was given. */
export interface CheckpointSegment {
  start: number;
  end: number;
  inputs: readonly Tensor[];
}

/**
 * `body(inputs)`, whose intermediates the backward pass recomputes instead of keeping. The body
 * may read other tensors of the graph (weights, masks); those are kept as they are, and only what
 * descends from `inputs` is recomputed after the gradient arrives. Segments do not nest.
 */
export function checkpoint(inputs: readonly Tensor[], body: (xs: Tensor[]) => Tensor[]): Tensor[] {
  const graph = inputs[0]?.graph;
  if (!graph) throw new Error('checkpoint: give at least one input tensor');
  if (graph.tracingCheckpoint) throw new Error('checkpoint: segments do not nest');
  const start = graph.nodes.length;
  graph.tracingCheckpoint = true;
  try {
    const outputs = body([...inputs]);
    const end = graph.nodes.length;
    // A second trace would draw again: its backward pass would not be the forward pass's. (Graph
    // inputs and constants a segment declares, such as a weight looked up on first use, are fine:
    // grad's second trace reads them as they are.)
    for (const node of graph.nodes.slice(start)) {
      if (RANDOM.has(node.op.name)) throw new Error(`checkpoint: a segment cannot draw (${node.op.name})`);
    }
    graph.checkpoints.push({ start, end, inputs });
    return outputs;
  } finally {
    graph.tracingCheckpoint = false;
  }
}

/**
 * x, computed only once `dep` is: x + 0·[dep's first element equals itself]. The comparison is
 * 1 or 0 (0 for NaN), never NaN or infinite, so an overflowed gradient in float16 cannot poison x.
 */
const After: OpDef<Record<string, never>> = {
  name: 'after',
  infer([x, dep]) {
    if (!isFloat(x!.dtype) || !isFloat(dep!.dtype)) throw new Error('after: both operands must be float');
    return [like(x!)];
  },
  lower(e, n) {
    const [x, dep] = n.inputs as [Tensor, Tensor];
    const flat = e.fresh('after_flat');
    const first = e.fresh('after_first');
    const first32 = e.fresh('after_first32');
    const same = e.fresh('after_same');
    const one = e.fresh('after_one');
    const zero = e.fresh('after_zero');
    e.emit('Reshape', [e.name(dep), e.ints([-1])], [flat]);
    e.emit('Slice', [flat, e.ints([0]), e.ints([1])], [first]);
    e.emit('Cast', [first], [first32], { to: ONNX_DTYPE.float32 });
    e.emit('Equal', [first32, first32], [same]);
    e.emit('Cast', [same], [one], { to: ONNX_DTYPE[x.dtype] });
    e.emit('Mul', [one, e.scalar(0, x.dtype)], [zero]);
    e.emit('Add', [e.name(x), zero], [e.name(n.outputs[0]!)]);
  },
  vjp: ({ grads }) => [grads[0], undefined],
};

/** `x`, once `dep` has been computed (After): what ties a recomputed segment to the backward pass. */
export const checkpointGate = (x: Tensor, dep: Tensor): Tensor => x.graph.apply1(After, [x, dep], {});
