/**
 * A training state: parameters and optimizer state living in a session worker, advanced by
 * `step(batch)`. Only the batch goes in and a few scalars come out each step.
 */
import { allocate, type DType } from './dtype.js';
import { Graph, type Tensor } from './graph.js';
import { compile } from './onnx.js';
import {
  buildTrainStep,
  learningRate,
  optimizerSlots,
  type ScheduleSpec,
  stateName,
  type TrainStepSpec,
  updatedName,
} from './optim.js';
import type { Runtime, Session, WireTensor } from './runtime/runtime.js';

export interface StepMetrics {
  loss: number;
  gradNorm: number;
  /** False when the gradient was not finite and the step was skipped. */
  applied: boolean;
  lr: number;
  step: number;
}

export interface TrainProgram {
  /** Traces the model and loss: declare parameters with `param`, batch tensors with `graph.input`. */
  build(graph: Graph, param: (name: string, shape: number[]) => Tensor): Tensor;
  dtype: DType;
}

let stateCounter = 0;

export class TrainingState {
  private stepCount = 0;

  private constructor(
    private readonly session: Session,
    private readonly stateId: string,
    readonly paramNames: readonly string[],
    private readonly stateKeys: readonly string[],
    private readonly dtype: DType,
    private readonly schedule: ScheduleSpec,
  ) {}

  static async create(
    runtime: Runtime,
    program: TrainProgram,
    spec: TrainStepSpec,
    schedule: ScheduleSpec,
    initial: Record<string, WireTensor>,
  ): Promise<TrainingState> {
    const graph = new Graph();
    const params = new Map<string, Tensor>();
    const loss = program.build(graph, (name, shape) => {
      const p = graph.input(name, program.dtype, shape);
      params.set(name, p);
      return p;
    });
    const step = buildTrainStep(graph, loss, params, spec);
    const session = await runtime.load(compile(graph, step.outputs, 'train_step'));
    const stateId = `train-${process.pid}-${stateCounter++}`;
    const names = [...params.keys()];
    const stateKeys = names.flatMap((n) => optimizerSlots(spec.optimizer).map((s) => stateName(n, s)));

    const tensors: Record<string, WireTensor> = {};
    for (const [name, p] of params) {
      const given = initial[name];
      if (!given) throw new Error(`training state: no initial value for parameter '${name}'`);
      if (given.dims.join() !== p.shape.join()) {
        throw new Error(`training state: '${name}' is [${given.dims}] but the model declares [${p.shape}]`);
      }
      tensors[name] = given;
    }
    for (const key of stateKeys) {
      const dims = params.get(key.slice(0, key.lastIndexOf('.')))!.shape as number[];
      tensors[key] = {
        dtype: program.dtype,
        dims,
        data: allocate(
          program.dtype,
          dims.reduce((a, b) => a * b, 1),
        ),
      };
    }
    await session.setState(stateId, tensors);
    return new TrainingState(session, stateId, names, stateKeys, program.dtype, schedule);
  }

  private scalar(value: number): WireTensor {
    const data = allocate(this.dtype, 1);
    data[0] = value;
    return { dtype: this.dtype, dims: [], data };
  }

  async step(batch: Record<string, WireTensor>): Promise<StepMetrics> {
    const step = this.stepCount + 1;
    const lr = learningRate(this.schedule, step);
    const everything = [...this.paramNames, ...this.stateKeys];
    const out = await this.session.run(
      { ...batch, lr: this.scalar(lr), step: this.scalar(step) },
      ['loss', 'grad_norm', 'finite'],
      {
        state: this.stateId,
        reads: Object.fromEntries(everything.map((k) => [k, k])),
        writes: Object.fromEntries(everything.map((k) => [updatedName(k), k])),
      },
    );
    const applied = Boolean(out.finite!.data[0]);
    if (applied) this.stepCount = step;
    return { loss: Number(out.loss!.data[0]), gradNorm: Number(out.grad_norm!.data[0]), applied, lr, step };
  }

  get steps(): number {
    return this.stepCount;
  }

  async parameters(): Promise<Record<string, WireTensor>> {
    return this.session.getState(this.stateId, [...this.paramNames]);
  }

  async dispose(): Promise<void> {
    await this.session.dropState(this.stateId);
    await this.session.release();
  }
}
