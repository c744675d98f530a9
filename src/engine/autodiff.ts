/**
 * Reverse-mode differentiation on the traced graph. Walks nodes from the loss back to the
 * parameters, calls each op's vector-Jacobian rule, and sums the contributions of fan-out. The
 * backward pass is more nodes in the same Graph, so it compiles to ONNX like everything else.
 */

import { isFloat } from './dtype.js';
import type { Node, Tensor } from './graph.js';
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

  for (let id = loss.node.id; id >= 0; id--) {
    const node = graph.nodes[id] as Node;
    if (!node.outputs.some((o) => live.has(key(o)))) continue;
    const outGrads = node.outputs.map((o) => grads.get(key(o)));
    if (outGrads.every((g) => g === undefined)) continue;
    if (node.inputs.length === 0) continue;
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
