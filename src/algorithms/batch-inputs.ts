/**
 * A training graph's per-step inputs, each declared once: `add` names the input, gives its dtype
 * and shape, and says how a step's batch fills it, so the graph input and its feed cannot drift
 * apart. `feeds(batch)` then fills every declared input. B is whatever the trainer prepares per
 * step (padded token grids, frozen log-probs, per-row features).
 */
import type { Graph, Shape, Tensor, WireTensor } from '../engine/index.js';

export class BatchInputs<B> {
  private readonly fills = new Map<string, (batch: B) => WireTensor>();

  constructor(private readonly graph: Graph) {}

  add(name: string, dtype: 'int64' | 'float32', shape: Shape, fill: (batch: B) => WireTensor): Tensor {
    this.fills.set(name, fill);
    return this.graph.input(name, dtype, shape);
  }

  feeds(batch: B): Record<string, WireTensor> {
    return Object.fromEntries([...this.fills].map(([name, fill]) => [name, fill(batch)]));
  }
}

/** One float per row, [R]. */
export const rowVector = (xs: readonly number[]): WireTensor => ({
  dtype: 'float32',
  dims: [xs.length],
  data: Float32Array.from(xs),
});

/**
 * A parameter lookup for `TrainProgram.build` that declares each parameter on first use with the
 * shape `shapes` gives, so the graph holds exactly the parameters the model reads.
 */
export function parameterLookup(
  shapes: readonly { name: string; shape: number[] }[],
  param: (name: string, shape: number[]) => Tensor,
): (name: string) => Tensor {
  const byName = new Map(shapes.map((p) => [p.name, p.shape]));
  const declared = new Map<string, Tensor>();
  return (name) => {
    let t = declared.get(name);
    if (!t) {
      const shape = byName.get(name);
      if (!shape) throw new Error(`the model reads parameter '${name}', which its parameter list lacks`);
      t = param(name, shape);
      declared.set(name, t);
    }
    return t;
  };
}
