/**
 * Reverse-mode differentiation on the traced graph. Walks nodes from the loss back to the
 * parameters, calls each op's vector-Jacobian rule, and sums the contributions of fan-out. The
 * backward pass is more nodes in the same Graph, so it compiles to ONNX like everything else.
 */

import { isFloat } from './dtype.js';
import type { Node, Tensor } from './graph.js';
import { type CheckpointSegment, checkpointGate } from './ops/checkpoint.js';
import { add } from './ops/elementwise.js';
import { scalar } from './ops/helpers.js';
import { zeros } from './ops/linalg-index.js';
import { shapeString } from './shape.js';

const key = (t: Tensor) => `${t.node.id}:${t.index}`;

/** d loss / d each of `wrt`; a parameter that does not influence the loss gets zeros. */
export function grad(loss: Tensor, wrt: readonly Tensor[]): Tensor[] {
  if (loss.rank !== 0 || !isFloat(loss.dtype)) {
    throw new Error(`grad: the loss must be a float scalar, got ${loss.dtype}${shapeString(loss.shape)}`);
  }
  const graph = loss.graph;

  // Tensors that depend on `wrt` through differentiable ops: only their nodes need rules.
  const live = new Set(wrt.map(key));
  for (const node of graph.nodes) {
    if (node.op.noGradient) continue;
    if (node.inputs.some((t) => live.has(key(t)))) for (const out of node.outputs) live.add(key(out));
  }
  if (!live.has(key(loss))) return wrt.map((w) => zerosIfIndependent(loss, w));

  const grads = new Map<string, Tensor>([[key(loss), scalar(graph, 1, loss.dtype)]]);
  const accumulate = (t: Tensor, g: Tensor) => {
    const prev = grads.get(key(t));
    grads.set(key(t), prev ? add(prev, g) : g);
  };

  const backprop = (node: Node) => {
    if (!node.outputs.some((o) => live.has(key(o)))) return;
    const outGrads = node.outputs.map((o) => grads.get(key(o)));
    if (outGrads.every((g) => g === undefined)) return;
    if (node.inputs.length === 0) return;
    if (!node.op.vjp) {
      throw new Error(
        `grad: ${node.op.name} (node ${node.id}) has no gradient rule but lies on the path from the loss to a parameter`,
      );
    }
    const inGrads = node.op.vjp({
      inputs: node.inputs,
      outputs: node.outputs,
      grads: outGrads,
      attrs: node.attrs as never,
    });
    node.inputs.forEach((input, i) => {
      const g = inGrads[i];
      if (g && live.has(key(input))) {
        if (shapeString(g.shape) !== shapeString(input.shape)) {
          throw new Error(
            `grad: ${node.op.name}'s rule gave ${shapeString(g.shape)} for input ${i} of shape ${shapeString(input.shape)}`,
          );
        }
        accumulate(input, g);
      }
    });
  };

  /**
   * A checkpointed segment's rules run on a second trace of it, made here: its inputs wait for
   * the gradient that reaches the segment (After), and the gradients of the first trace's
   * tensors move to their copies. Nothing of the backward pass then reads the first trace.
   */
  const recompute = (segment: CheckpointSegment) => {
    const graded: Tensor[] = [];
    for (let id = segment.start; id < segment.end; id++) {
      const node = graph.nodes[id] as Node;
      // A graph input the segment declared (a weight looked up on first use) is not recomputed.
      if (node.inputs.length === 0) continue;
      for (const out of node.outputs) if (grads.has(key(out))) graded.push(out);
    }
    const last = graded.at(-1);
    if (!last) return;
    const dep = grads.get(key(last)) as Tensor;
    const copy = new Map<string, Tensor>();
    const first = graph.nodes.length;
    for (const x of segment.inputs) {
      if (!isFloat(x.dtype) || copy.has(key(x))) continue;
      const late = checkpointGate(x, dep);
      copy.set(key(x), late);
      if (live.has(key(x))) live.add(key(late));
    }
    for (let id = segment.start; id < segment.end; id++) {
      const node = graph.nodes[id] as Node;
      if (node.inputs.length === 0) continue;
      const outs = graph.apply(
        node.op,
        node.inputs.map((t) => copy.get(key(t)) ?? t),
        node.attrs,
      );
      node.outputs.forEach((o, i) => {
        const c = outs[i] as Tensor;
        copy.set(key(o), c);
        if (live.has(key(o))) live.add(key(c));
      });
    }
    for (const t of graded) {
      grads.set(key(copy.get(key(t)) as Tensor), grads.get(key(t)) as Tensor);
      grads.delete(key(t));
    }
    for (let id = graph.nodes.length - 1; id >= first; id--) backprop(graph.nodes[id] as Node);
  };

  // Segments wholly before the loss; one that computes the loss itself is differentiated as it is.
  const segmentEndingAt = new Map(
    graph.checkpoints.filter((s) => s.end - 1 <= loss.node.id).map((s) => [s.end - 1, s]),
  );
  for (let id = loss.node.id; id >= 0; id--) {
    const segment = segmentEndingAt.get(id);
    if (segment) {
      recompute(segment);
      id = segment.start;
      continue;
    }
    backprop(graph.nodes[id] as Node);
  }
  return wrt.map((w) => grads.get(key(w)) ?? zerosIfIndependent(loss, w));
}

/**
 * A parameter that gets no gradient must truly not influence the loss. If it does, but only
 * through ops without a gradient rule (argmax, topk, comparisons...), that is almost always a
 * bug in the model code, so say which ops block it. stopGradient is a deliberate block.
 */
function zerosIfIndependent(loss: Tensor, w: Tensor): Tensor {
  const reach = new Set([key(w)]);
  const blockers = new Set<string>();
  for (const node of loss.graph.nodes) {
    if (!node.inputs.some((t) => reach.has(key(t)))) continue;
    if (node.op.noGradient && node.op.name !== 'stopGradient') blockers.add(node.op.name);
    if (node.op.name === 'stopGradient') continue;
    for (const out of node.outputs) reach.add(key(out));
  }
  if (reach.has(key(loss))) {
    throw new Error(
      `grad: the loss depends on ${w} only through non-differentiable ops (${[...blockers].join(', ')}); ` +
        'wrap the path in stopGradient if that is intended',
    );
  }
  return zeros(w, w.shape);
}
