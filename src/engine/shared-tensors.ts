/**
 * Tensors that many training states read and none writes — a frozen base under many LoRA
 * adapters — held once, in one worker (on its device). A TrainingState created with `shared` is
 * loaded into that worker and its runs read these in place, so N adapters on one base cost the
 * base once.
 */
import { Graph } from './graph.js';
import { compile } from './onnx.js';
import * as T from './ops/index.js';
import type { Runtime, Session, WireTensor } from './runtime/runtime.js';
import type { ParameterSource } from './train-state.js';

let counter = 0;

export class SharedTensors {
  private constructor(
    /** A one-op session whose worker holds the tensors: states that read them are loaded near it. */
    readonly anchor: Session,
    readonly id: string,
    readonly shapes: ReadonlyMap<string, readonly number[]>,
  ) {}

  /** `handOver`: the tensors' buffers move to the worker, leaving the caller's arrays empty (Session.setState). */
  static async create(
    runtime: Runtime,
    tensors: Record<string, WireTensor>,
    o: { handOver?: boolean } = {},
  ): Promise<SharedTensors> {
    const g = new Graph();
    const x = g.input('x', 'float32', []);
    const anchor = await runtime.load(
      compile(g, { y: T.neg(x) }, 'shared_anchor', { provider: runtime.provider }),
    );
    const id = `shared-${process.pid}-${counter++}`;
    const shapes = new Map(Object.entries(tensors).map(([k, t]) => [k, t.dims] as const));
    await anchor.setState(id, tensors, o);
    return new SharedTensors(anchor, id, shapes);
  }

  /** Where they live, for a graph that reads them in place (as a training state's parameters). */
  get source(): ParameterSource {
    return { session: this.anchor, state: this.id, keys: [...this.shapes.keys()] };
  }

  async dispose(): Promise<void> {
    await this.anchor.dropState(this.id);
    await this.anchor.release();
  }
}
