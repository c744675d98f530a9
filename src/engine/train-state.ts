/**
 * A training state: parameters and optimizer state living in a session worker, advanced by
 * `step(batch)`. Only the batch goes in and a few scalars come out each step. With `accumulate`,
 * the step is two sessions in one worker over one state, as a training API calls them:
 * `forwardBackward(batch)` adds the batch's gradient to accumulators, `optimStep()` applies the
 * update to their sum (clipped, as a fused step would) and zeroes them. A state can be read back
 * whole (`snapshot`: parameters, optimizer slots, accumulators, step) and put back (`restore`),
 * and other graphs can read its parameters in place (`reader`), without a copy.
 */
import { allocate, bytesPer, type DType, fromNumbers } from './dtype.js';
import { Graph, type Tensor } from './graph.js';
import { compileTrainLoop } from './loop.js';
import { LOSS_SCALE_INPUT, LossScaler, type LossScaleSpec, type LossScaleState } from './loss-scale.js';
import { type CompiledModel, compile } from './onnx.js';
import {
  buildAccumulatedStep,
  buildGradAccumulation,
  buildGradNorm,
  buildTrainStep,
  defaultUpdateLayout,
  GRAD_NORM,
  gradAccName,
  learningRate,
  optimizerParts,
  optimizerSlots,
  type ScheduleSpec,
  stateName,
  type TrainStepSpec,
  type UpdateLayout,
  updatedName,
} from './optim.js';
import type { Provider, Runtime, Session, StateBinding, WireTensor } from './runtime/runtime.js';
import type { SharedTensors } from './shared-tensors.js';

/**
 * Whether an accumulating state's optimizer step leaves its gradient sums for the worker to zero
 * in their own buffers (StateBinding.zero) rather than outputting zeros: state in host memory,
 * updated in place. Otherwise each step allocates a new set of sums and drops the old one, whose
 * memory waits for the worker's garbage collector.
 */
const zeroesOnHost = (provider: Provider, inPlace: boolean): boolean => inPlace && provider === 'cpu';

/** The parameter a slot or gradient sum belongs to, from its state key. */
function ownerOf(key: string): string {
  const acc = gradAccName('');
  return key.endsWith(acc) ? key.slice(0, -acc.length) : key.slice(0, key.lastIndexOf('.'));
}

/**
 * The outputs a step reads on the host (loss, gradient norm, the finite flag): every output not
 * written back to the state (`<key>.next`). ONNX Runtime writes them to host memory directly.
 */
function readOnHost(model: CompiledModel): string[] {
  return model.outputs.map((o) => o.name).filter((n) => !n.endsWith(updatedName('')));
}

export interface StepMetrics {
  loss: number;
  gradNorm: number;
  /** False when the gradient was not finite and the step was skipped. */
  applied: boolean;
  lr: number;
  step: number;
  /** The loss scale the step's gradient was computed under (a state with `lossScale`). */
  lossScale?: number;
}

/**
 * What a graph is traced for: model code may spell an op with the kernels that provider has (one
 * fused node where a GPU pays per node, DecoderInputs.fusedKernels).
 */
export interface TraceTarget {
  provider: Provider;
}

export interface TrainProgram {
  /**
   * Traces the model and loss: declare parameters with `param`, batch tensors with `graph.input`,
   * and tensors the step reads but never changes (a frozen base under an adapter) with `frozen`,
   * their values given once to `TrainingState.create` and kept in the worker beside the parameters.
   */
  build(
    graph: Graph,
    param: (name: string, shape: number[]) => Tensor,
    frozen: (name: string, shape: number[]) => Tensor,
    target: TraceTarget,
  ): Tensor;
  dtype: DType;
}

let stateCounter = 0;

export interface TrainingStateOptions {
  /** Compile the step as an ONNX Loop so `stepMany` runs several steps in one call. */
  fold?: boolean;
  /** The values of the program's `frozen` tensors, by name. */
  frozen?: Record<string, WireTensor>;
  /** forwardBackward/optimStep (gradient accumulation) instead of one fused step. */
  accumulate?: boolean;
  /** Read the program's `frozen` tensors from these, held once for many states, not from `frozen`. */
  shared?: SharedTensors;
  /** Sessions that give activation memory back after each run (many states in one process). */
  lowMemory?: boolean;
  /**
   * An accumulating state's forwardBackward and optimStep write the new gradient sums, parameters
   * and optimizer slots into the buffers of the old ones (host memory; StateBinding.inPlace)
   * instead of new ones: the state's memory is allocated once, not every step. Not the fused
   * step: there a node that reads a parameter only for the loss output may run after its update.
   * @default true
   */
  inPlace?: boolean;
  /**
   * The optimizer update per parameter or over all of them as one vector (optim.ts, UpdateLayout).
   * @default 'per-tensor' on the cpu provider, 'flat' on a GPU's (where each node is a dispatch)
   */
  updateLayout?: UpdateLayout;
  /**
   * Scale the loss dynamically (loss-scale.ts): for a program whose backward pass runs in float16
   * on float32 parameters. Each step feeds the scale; a step whose gradient overflowed is skipped
   * and the scale halves. Not with `fold`.
   */
  lossScale?: LossScaleSpec;
  /**
   * The initial parameters' buffers move to the worker without a copy, and the caller's arrays
   * are left empty: for values made or loaded only to start the state. Otherwise they are copied,
   * and the caller's copy stays until its garbage collector runs (the parameters' bytes again).
   */
  handOver?: boolean;
  /**
   * An accumulating state updated in place on the host runs its optimizer step in parts of at
   * least this many parameter bytes, one run each after a run for the gradient norm, so that
   * onnxruntime-node's copies of a run's outputs hold one part at a time (optim.ts,
   * optimizerParts). A model smaller than this steps in one run, as before.
   * @default OPTIMIZER_PART_BYTES
   */
  optimizerPartBytes?: number;
}

/**
 * 256 MiB of parameters a part: at Qwen2.5-0.5B's size (1.98 GB of float32 parameters) six
 * parts, each run's copies bounded by its largest, the 545 MB embedding with its two Adam moments.
 */
export const OPTIMIZER_PART_BYTES = 256 * 2 ** 20;

/**
 * The optimizer step's sessions: one over every parameter, or (optimizerPartBytes) a session for
 * the gradient norm and one for each part's update, fed that norm.
 */
interface OptimizerSessions {
  norm?: Session;
  parts: { session: Session; names: readonly string[] }[];
}

/** K tensors of one shape as one [K, ...] tensor. */
function stack(ts: WireTensor[], name: string): WireTensor {
  const first = ts[0]!;
  const data = allocate(first.dtype, ts.length * first.data.length);
  ts.forEach((t, i) => {
    if (t.dtype !== first.dtype || t.dims.join() !== first.dims.join())
      throw new Error(
        `stepMany: '${name}' of batch ${i} is ${t.dtype}[${t.dims}], batch 0's is ${first.dtype}[${first.dims}]`,
      );
    (data as Float32Array).set(t.data as Float32Array, i * first.data.length);
  });
  return { dtype: first.dtype, dims: [ts.length, ...first.dims], data };
}

/** A training state read back to the host: every tensor it holds, and the counters beside them. */
export interface TrainingSnapshot {
  /** Parameters, optimizer slots and (accumulating states) gradient accumulators, by state key. */
  tensors: Record<string, WireTensor>;
  steps: number;
  /** Σ loss of the forwardBackward calls whose gradients are in the accumulators. */
  pendingLoss: number;
  /** Where the loss scale stood (a state with `lossScale`). */
  lossScale?: LossScaleState;
}

/**
 * A state as it was at one moment, held in its worker without a copy (TrainingState.pin), to be
 * read later, off the path of the steps that follow: once they have replaced its tensors, reading
 * it hands their buffers over instead of copying them.
 */
export interface PinnedSnapshot {
  steps: number;
  pendingLoss: number;
  lossScale?: LossScaleState;
  /** The snapshot; once read, the pin is gone. */
  read(): Promise<TrainingSnapshot>;
  /** Lets the pinned tensors go unread. */
  release(): Promise<void>;
}

let pinCounter = 0;

/** A training state's parameters where they live (TrainingState.parameterSource). */
export interface ParameterSource {
  /** The state's session: load a reader `near` it, in the same worker. */
  session: Session;
  state: string;
  /** The parameter names, which are also their state keys. */
  keys: string[];
}

/** A graph run over a state's parameters where they live (in the state's worker). */
export interface StateReader {
  run(feeds: Record<string, WireTensor>, fetch: string[]): Promise<Record<string, WireTensor>>;
  release(): Promise<void>;
}

/** Where the time to a ready training state went (milliseconds). */
export interface BuildTimings {
  /** Tracing the model, autodiff and the optimizer update. */
  traceMs: number;
  /** Lowering to ONNX bytes. */
  compileMs: number;
  /** ONNX Runtime session creation (graph optimisation, kernel selection) in the worker. */
  sessionMs: number;
}

/** What a TrainingState is made of (TrainingState.create assembles it; see the fields). */
interface StateParts {
  session: Session;
  stateId: string;
  paramNames: readonly string[];
  stateKeys: readonly string[];
  frozenNames: readonly string[];
  dtype: DType;
  schedule: ScheduleSpec;
  timings: BuildTimings;
  folded: boolean;
  optimizer: OptimizerSessions | undefined;
  shared: SharedTensors | undefined;
  frozenShapes: Readonly<Record<string, { dims: readonly number[] }>>;
  lowMemory: boolean;
  keyShapes: ReadonlyMap<string, readonly number[]>;
  inPlace: boolean;
  scaler: LossScaler | undefined;
  zeroesSums: boolean;
}

export class TrainingState {
  private stepCount = 0;
  /** Sessions of the losses `addLoss` compiled over this state. */
  private readonly addedLosses: Session[] = [];

  private readonly session: Session;
  private readonly stateId: string;
  readonly paramNames: readonly string[];
  private readonly stateKeys: readonly string[];
  /** Read every step, never written. */
  private readonly frozenNames: readonly string[];
  private readonly dtype: DType;
  private readonly schedule: ScheduleSpec;
  readonly timings: BuildTimings;
  private readonly folded: boolean;
  /** With accumulation: the optimizer step's sessions (the main session accumulates). */
  private readonly optimizer?: OptimizerSessions;
  /** Σ loss of the forwardBackward calls since the last optimStep. */
  private pendingLoss = 0;
  /** Where the frozen tensors live when many states share them. */
  private readonly shared?: SharedTensors;
  /** The shapes of the frozen tensors, by name. */
  readonly frozenShapes: Readonly<Record<string, { dims: readonly number[] }>>;
  /** Whether the state's sessions (and those added to it) give activation memory back. */
  private readonly lowMemory: boolean;
  /** The shape of every parameter, slot and accumulator, by state key (what a snapshot holds). */
  private readonly keyShapes: ReadonlyMap<string, readonly number[]>;
  /** Steps write the new parameters and slots over the old ones (TrainingStateOptions.inPlace). */
  private readonly inPlace: boolean;
  /** The loss scale each step's gradient is computed under (TrainingStateOptions.lossScale). */
  private readonly scaler?: LossScaler;
  /** The optimizer step leaves the gradient sums to the worker to zero in place (zeroesOnHost). */
  private readonly zeroesSums: boolean;

  private constructor(p: StateParts) {
    this.session = p.session;
    this.stateId = p.stateId;
    this.paramNames = p.paramNames;
    this.stateKeys = p.stateKeys;
    this.frozenNames = p.frozenNames;
    this.dtype = p.dtype;
    this.schedule = p.schedule;
    this.timings = p.timings;
    this.folded = p.folded;
    this.optimizer = p.optimizer;
    this.shared = p.shared;
    this.frozenShapes = p.frozenShapes;
    this.lowMemory = p.lowMemory;
    this.keyShapes = p.keyShapes;
    this.inPlace = p.inPlace;
    this.scaler = p.scaler;
    this.zeroesSums = p.zeroesSums;
  }

  static async create(
    runtime: Runtime,
    program: TrainProgram,
    spec: TrainStepSpec,
    schedule: ScheduleSpec,
    initial: Record<string, WireTensor>,
    options: TrainingStateOptions = {},
  ): Promise<TrainingState> {
    const t0 = performance.now();
    const graph = new Graph();
    const params = new Map<string, Tensor>();
    const frozen = new Map<string, Tensor>();
    const loss = program.build(
      graph,
      (name, shape) => {
        const p = graph.input(name, program.dtype, shape);
        params.set(name, p);
        return p;
      },
      (name, shape) => {
        const t = graph.input(name, program.dtype, shape);
        frozen.set(name, t);
        return t;
      },
      { provider: runtime.provider },
    );
    if (options.fold && options.accumulate)
      throw new Error('training state: a folded step has no separate forward/backward and optimizer step');
    if (options.fold && options.lossScale)
      throw new Error('training state: a folded step cannot scale its loss (the scale moves between steps)');
    // Checked before any session is made, so a refusal leaves nothing loaded behind.
    for (const [name, t] of frozen) {
      const given = options.shared
        ? options.shared.shapes.get(name) && { dims: options.shared.shapes.get(name)! }
        : options.frozen?.[name];
      if (!given) throw new Error(`training state: no value for frozen tensor '${name}'`);
      if (given.dims.join() !== t.shape.join())
        throw new Error(
          `training state: frozen '${name}' is [${given.dims}] but the model declares [${t.shape}]`,
        );
    }
    const scaled = options.lossScale !== undefined;
    const scaler = options.lossScale && new LossScaler(options.lossScale);
    const accumulated = options.accumulate ? buildGradAccumulation(graph, loss, params, scaled) : undefined;
    const layout = options.updateLayout ?? defaultUpdateLayout(runtime.provider);
    const zeroesSums = accumulated !== undefined && zeroesOnHost(runtime.provider, options.inPlace ?? true);
    const shapes = new Map([...params].map(([n, p]) => [n, p.shape as number[]]));
    // In parts only where the step's outputs come back to the host to be copied there.
    const parts =
      zeroesSums && layout === 'per-tensor'
        ? optimizerParts(shapes, bytesPer(program.dtype), options.optimizerPartBytes ?? OPTIMIZER_PART_BYTES)
        : [[...params.keys()]];
    const applyGraphs = (accumulated ? parts : []).map((names) => {
      const g = new Graph();
      const ps = new Map(names.map((n) => [n, g.input(n, program.dtype, shapes.get(n)!)]));
      return {
        graph: g,
        names,
        step: buildAccumulatedStep(g, ps, spec, program.dtype, layout, !zeroesSums, parts.length > 1),
      };
    });
    // A fused step's update is in the same graph as its forward and backward passes.
    const step = accumulated ? undefined : buildTrainStep(graph, loss, params, spec, layout, scaled);
    const t1 = performance.now();
    const model = !step
      ? compile(graph, accumulated!.outputs, 'forward_backward', { provider: runtime.provider })
      : options.fold
        ? compileTrainLoop(
            {
              outputs: step.outputs,
              carried: [...params.values(), ...step.state.values()],
              lr: step.lr,
              step: step.step,
              perStep: graph.inputs.filter(
                (t) =>
                  ![
                    ...params.values(),
                    ...step.state.values(),
                    ...frozen.values(),
                    step.lr,
                    step.step,
                  ].includes(t),
              ),
              frozen: [...frozen.values()],
            },
            'train_loop',
            { provider: runtime.provider },
          )
        : compile(graph, step.outputs, 'train_step', { provider: runtime.provider });
    const t2 = performance.now();
    const names = [...params.keys()];
    const stateKeys = [
      ...names.flatMap((n) => optimizerSlots(spec.optimizer).map((s) => stateName(n, s))),
      ...(accumulated ? names.map(gradAccName) : []),
    ];
    // Parameters and optimizer slots never leave the device between steps.
    const lowMemory = options.lowMemory ?? false;
    const session = await runtime.load(model, {
      outputsOnDevice: true,
      hostOutputs: readOnHost(model),
      lowMemory,
      ...(options.shared ? { near: options.shared.anchor } : {}),
    });
    // The optimizer step reads and writes the same state: it must live in the same worker.
    const near = async (model: CompiledModel) =>
      runtime.load(model, {
        outputsOnDevice: true,
        hostOutputs: readOnHost(model),
        lowMemory,
        near: session,
      });
    let optimizer: OptimizerSessions | undefined;
    if (accumulated) {
      const normGraph = new Graph();
      optimizer = {
        ...(parts.length > 1
          ? {
              norm: await near(
                compile(normGraph, buildGradNorm(normGraph, shapes, program.dtype), 'grad_norm', {
                  provider: runtime.provider,
                }),
              ),
            }
          : {}),
        parts: [],
      };
      for (const [i, a] of applyGraphs.entries()) {
        const name = parts.length > 1 ? `optim_step_${i}` : 'optim_step';
        const model = compile(a.graph, a.step.outputs, name, { provider: runtime.provider });
        optimizer.parts.push({ session: await near(model), names: a.names });
      }
    }
    const timings: BuildTimings = { traceMs: t1 - t0, compileMs: t2 - t1, sessionMs: performance.now() - t2 };
    const stateId = `train-${process.pid}-${stateCounter++}`;

    const tensors: Record<string, WireTensor> = {};
    for (const [name, p] of params) {
      const given = initial[name];
      if (!given) throw new Error(`training state: no initial value for parameter '${name}'`);
      if (given.dims.join() !== p.shape.join()) {
        throw new Error(`training state: '${name}' is [${given.dims}] but the model declares [${p.shape}]`);
      }
      tensors[name] = given;
    }
    // The optimizer's slots and the gradient sums start at zero: made here only to be stored, they
    // move to the worker without a copy (3× the parameters' bytes under AdamW).
    const zeros: Record<string, WireTensor> = {};
    for (const key of stateKeys) {
      const dims = params.get(ownerOf(key))!.shape as number[];
      zeros[key] = {
        dtype: program.dtype,
        dims,
        data: allocate(
          program.dtype,
          dims.reduce((a, b) => a * b, 1),
        ),
      };
    }
    await session.setState(stateId, tensors, { handOver: options.handOver ?? false });
    if (!options.shared && frozen.size)
      await session.setState(
        stateId,
        Object.fromEntries([...frozen.keys()].map((name) => [name, options.frozen![name]!])),
      );
    const keyShapes = new Map([
      ...names.map((k) => [k, tensors[k]!.dims] as const),
      ...stateKeys.map((k) => [k, zeros[k]!.dims] as const),
    ]);
    await session.setState(stateId, zeros, { handOver: true });
    return new TrainingState({
      session,
      stateId,
      paramNames: names,
      stateKeys,
      frozenNames: [...frozen.keys()],
      dtype: program.dtype,
      schedule,
      timings,
      folded: options.fold ?? false,
      optimizer,
      shared: options.shared,
      frozenShapes: Object.fromEntries([...frozen].map(([n, t]) => [n, { dims: t.shape as number[] }])),
      lowMemory,
      keyShapes,
      inPlace: options.inPlace ?? true,
      scaler,
      zeroesSums,
    });
  }

  /** The runs an optimizer step takes: 1, or a norm run and one per part (optimizerPartBytes). */
  get optimizerRuns(): number {
    return this.optimizer ? this.optimizer.parts.length + (this.optimizer.norm ? 1 : 0) : 0;
  }

  private scalar(value: number): WireTensor {
    return { dtype: this.dtype, dims: [], data: fromNumbers(this.dtype, [value]) };
  }

  /** The batch and, when the loss is scaled, the scale the gradient is computed under. */
  private scaledFeeds(batch: Record<string, WireTensor>): Record<string, WireTensor> {
    return this.scaler ? { ...batch, [LOSS_SCALE_INPUT]: this.scalar(this.scaler.scale) } : batch;
  }

  /** A step's figures, the loss scale moved by whether it applied. */
  private stepped(m: StepMetrics): StepMetrics {
    if (!this.scaler) return m;
    const lossScale = this.scaler.scale;
    this.scaler.update(m.applied);
    return { ...m, lossScale };
  }

  /** The fused step's (and the optimizer step's) state: reads and writes everything; only the model reads frozen tensors. */
  private binding(withFrozen = true, inPlace = false, params = this.paramNames): StateBinding {
    const owned = new Set(params);
    const everything = [...params, ...this.stateKeys.filter((k) => owned.has(ownerOf(k)))];
    // Accumulators come back as a constant fill, which may run before their last read: never in
    // place. An optimizer step on the host leaves them to the worker to zero in their buffers.
    const accs = new Set(params.map(gradAccName));
    const notSums = everything.filter((k) => !accs.has(k));
    const zero = inPlace && this.zeroesSums;
    return this.readingFrozen(
      {
        state: this.stateId,
        reads: Object.fromEntries(everything.map((k) => [k, k])),
        writes: Object.fromEntries((zero ? notSums : everything).map((k) => [updatedName(k), k])),
        ...this.inPlaceWrites(inPlace ? notSums : []),
        ...(zero ? { zero: [...accs] } : {}),
      },
      withFrozen ? this.frozenNames : [],
    );
  }

  /** `keys`' outputs as StateBinding.inPlace, when this state updates in place. */
  private inPlaceWrites(keys: readonly string[]): Pick<StateBinding, 'inPlace'> {
    return this.inPlace && keys.length ? { inPlace: keys.map(updatedName) } : {};
  }

  /** `b`, also reading frozen tensors `names` where they live: this state, or the shared tensors. */
  private readingFrozen(b: StateBinding, names: readonly string[]): StateBinding {
    if (names.length === 0) return b;
    const reads = Object.fromEntries(names.map((k) => [k, k]));
    return this.shared
      ? { ...b, shared: { state: this.shared.id, reads } }
      : { ...b, reads: { ...b.reads, ...reads } };
  }

  /** Adds the batch's gradient to the accumulators (an `accumulate` state); returns its loss. */
  forwardBackward(batch: Record<string, WireTensor>): Promise<number> {
    if (!this.optimizer) throw new Error('training state: forwardBackward needs { accumulate: true }');
    return this.accumulate(this.session, this.paramNames, this.frozenNames, batch);
  }

  private async accumulate(
    session: Session,
    params: readonly string[],
    frozen: readonly string[],
    batch: Record<string, WireTensor>,
  ): Promise<number> {
    const accs = params.map(gradAccName);
    const out = await session.run(
      this.scaledFeeds(batch),
      ['loss'],
      this.readingFrozen(
        {
          state: this.stateId,
          reads: Object.fromEntries([...params, ...accs].map((k) => [k, k])),
          writes: Object.fromEntries(accs.map((k) => [updatedName(k), k])),
          ...this.inPlaceWrites(accs),
        },
        frozen,
      ),
    );
    const loss = Number(out.loss!.data[0]);
    this.pendingLoss += loss;
    return loss;
  }

  /**
   * Another loss over this accumulating state, compiled into the state's worker: its gradient
   * goes into the same accumulators, so one optimStep applies the sum of every loss's calls. The
   * program declares the parameters (and frozen tensors) it reads, by the state's names.
   */
  async addLoss(
    runtime: Runtime,
    program: TrainProgram,
  ): Promise<(batch: Record<string, WireTensor>) => Promise<number>> {
    if (!this.optimizer) throw new Error('training state: addLoss needs { accumulate: true }');
    const graph = new Graph();
    const params = new Map<string, Tensor>();
    const frozen = new Map<string, Tensor>();
    const loss = program.build(
      graph,
      this.declaring(graph, this.paramNames, params, 'parameter'),
      this.declaring(graph, this.frozenNames, frozen, 'frozen tensor'),
      { provider: runtime.provider },
    );
    const { outputs } = buildGradAccumulation(graph, loss, params, this.scaler !== undefined);
    const model = compile(graph, outputs, 'forward_backward', { provider: runtime.provider });
    const session = await runtime.load(model, {
      outputsOnDevice: true,
      hostOutputs: readOnHost(model),
      lowMemory: this.lowMemory,
      near: this.session,
    });
    this.addedLosses.push(session);
    const [names, frozenNames] = [[...params.keys()], [...frozen.keys()]];
    return (batch) => this.accumulate(session, names, frozenNames, batch);
  }

  /** A `param`/`frozen` callback for another graph over this state: only the state's names, recorded in `into`. */
  private declaring(graph: Graph, known: readonly string[], into: Map<string, Tensor>, kind: string) {
    return (name: string, shape: number[]) => {
      if (!known.includes(name)) throw new Error(`training state: no ${kind} '${name}'`);
      const t = graph.input(name, this.dtype, shape);
      into.set(name, t);
      return t;
    };
  }

  /**
   * The optimizer step on the gradients accumulated since the last one (their sum), with the
   * schedule's learning rate unless `lr` is given; `loss` is the sum of those calls' losses.
   */
  async optimStep(lr?: number): Promise<StepMetrics> {
    if (!this.optimizer) throw new Error('training state: optimStep needs { accumulate: true }');
    const step = this.stepCount + 1;
    const rate = lr ?? learningRate(this.schedule, step);
    const feeds = { lr: this.scalar(rate), step: this.scalar(step) };
    const { norm, parts } = this.optimizer;
    let out: Record<string, WireTensor>;
    if (!norm) out = await parts[0]!.session.run(feeds, [GRAD_NORM, 'finite'], this.binding(false, true));
    else {
      const accs = this.paramNames.map(gradAccName);
      out = await norm.run({}, [GRAD_NORM, 'finite'], {
        state: this.stateId,
        reads: Object.fromEntries(accs.map((k) => [k, k])),
        writes: {},
      });
      // A step that is skipped still runs every part: its update keeps the old values, and its
      // gradient sums are zeroed as one run's would be.
      for (const part of parts)
        await part.session.run(
          { ...feeds, [GRAD_NORM]: out[GRAD_NORM]! },
          [],
          this.binding(false, true, part.names),
        );
    }
    const applied = Boolean(out.finite!.data[0]);
    if (applied) this.stepCount = step;
    const loss = this.pendingLoss;
    this.pendingLoss = 0;
    return this.stepped({ loss, gradNorm: Number(out.grad_norm!.data[0]), applied, lr: rate, step });
  }

  async step(batch: Record<string, WireTensor>): Promise<StepMetrics> {
    if (this.optimizer) {
      await this.forwardBackward(batch);
      return this.optimStep();
    }
    if (this.folded) return (await this.stepMany([batch]))[0]!;
    const step = this.stepCount + 1;
    const lr = learningRate(this.schedule, step);
    const out = await this.session.run(
      { ...this.scaledFeeds(batch), lr: this.scalar(lr), step: this.scalar(step) },
      ['loss', 'grad_norm', 'finite'],
      this.binding(),
    );
    const applied = Boolean(out.finite!.data[0]);
    if (applied) this.stepCount = step;
    return this.stepped({
      loss: Number(out.loss!.data[0]),
      gradNorm: Number(out.grad_norm!.data[0]),
      applied,
      lr,
      step,
    });
  }

  /**
   * Several steps, one batch each, in order. Folded states run them as one ONNX Loop (one round
   * trip, parameters never leave the runtime); others step one at a time. The learning rates are
   * the schedule's for the steps as numbered when they start (a skipped step does not shift them).
   */
  async stepMany(batches: Record<string, WireTensor>[]): Promise<StepMetrics[]> {
    if (batches.length === 0) return [];
    if (!this.folded) {
      const out: StepMetrics[] = [];
      for (const b of batches) out.push(await this.step(b));
      return out;
    }
    const k = batches.length;
    const lrs = batches.map((_, i) => learningRate(this.schedule, this.stepCount + i + 1));
    const lrData = fromNumbers(this.dtype, lrs);
    const feeds: Record<string, WireTensor> = {
      lr: { dtype: this.dtype, dims: [k], data: lrData },
      steps_done: this.scalar(this.stepCount),
    };
    for (const name of Object.keys(batches[0]!))
      feeds[name] = stack(
        batches.map((b, i) => {
          const t = b[name];
          if (!t) throw new Error(`stepMany: batch ${i} has no '${name}'`);
          return t;
        }),
        name,
      );
    const out = await this.session.run(
      feeds,
      ['loss', 'grad_norm', 'finite', 'steps_done.next'],
      this.binding(),
    );
    // As in step(): `step` is the number the step was attempted as.
    let done = this.stepCount;
    this.stepCount = Number(out['steps_done.next']!.data[0]);
    return lrs.map((lr, i) => {
      const applied = Boolean(out.finite!.data[i]);
      const step = done + 1;
      if (applied) done = step;
      return {
        loss: Number(out.loss!.data[i]),
        gradNorm: Number(out.grad_norm!.data[i]),
        applied,
        lr,
        step,
      };
    });
  }

  get steps(): number {
    return this.stepCount;
  }

  /** Where the loss scale stands (a state with `lossScale`). */
  get lossScale(): LossScaleState | undefined {
    return this.scaler?.state;
  }

  /** The session the steps run in: its provider, the bytes it moved, its device memory. */
  get runner(): Session {
    return this.session;
  }

  /**
   * Where the parameters live, for a graph that reads them in place run after run (a decoder of
   * the current weights): a session loaded `near` this one binds `shared: { state, reads }`. What
   * it reads is the state as of each run, so it follows every step with no copy and no recompile.
   */
  get parameterSource(): ParameterSource {
    return { session: this.session, state: this.stateId, keys: [...this.paramNames] };
  }

  async parameters(): Promise<Record<string, WireTensor>> {
    return this.session.getState(this.stateId, [...this.paramNames]);
  }

  /** Every tensor of the state and its counters, read back to the host. */
  async snapshot(): Promise<TrainingSnapshot> {
    return {
      tensors: await this.session.getState(this.stateId, [...this.paramNames, ...this.stateKeys]),
      steps: this.stepCount,
      pendingLoss: this.pendingLoss,
      ...this.lossScaleState(),
    };
  }

  /** The loss scale's state, as a snapshot holds it. */
  private lossScaleState(): Pick<TrainingSnapshot, 'lossScale'> {
    return this.scaler ? { lossScale: this.scaler.state } : {};
  }

  /** The state as it is now, pinned in its worker for a later read (PinnedSnapshot). */
  async pin(): Promise<PinnedSnapshot> {
    const keys = [...this.paramNames, ...this.stateKeys];
    const as = `${this.stateId}#pin-${pinCounter++}`;
    await this.session.pinState(this.stateId, keys, as);
    const { stepCount: steps, pendingLoss } = this;
    const scale = this.lossScaleState();
    let gone = false;
    const release = async () => {
      if (gone) return;
      gone = true;
      await this.session.dropState(as);
    };
    return {
      steps,
      pendingLoss,
      ...scale,
      read: async () => {
        if (gone) throw new Error('training state: this pinned snapshot was already read or released');
        try {
          const tensors = await this.session.getState(as, keys, { transfer: true });
          return { tensors, steps, pendingLoss, ...scale };
        } finally {
          await release();
        }
      },
      release,
    };
  }

  /**
   * Puts a snapshot of a state of the same program back; every key must be there, in its shape.
   * `handOver`: the snapshot's buffers move to the worker, leaving its arrays empty (Session.setState).
   */
  async restore(s: TrainingSnapshot, o: { handOver?: boolean } = {}): Promise<void> {
    for (const [key, dims] of this.keyShapes) {
      const given = s.tensors[key];
      if (!given) throw new Error(`training state: the snapshot has no '${key}'`);
      if (given.dims.join() !== dims.join() || given.dtype !== this.dtype)
        throw new Error(
          `training state: snapshot '${key}' is ${given.dtype}[${given.dims}], the state holds ${this.dtype}[${dims}]`,
        );
    }
    await this.session.setState(
      this.stateId,
      Object.fromEntries([...this.keyShapes.keys()].map((k) => [k, s.tensors[k]!])),
      o,
    );
    this.stepCount = s.steps;
    this.pendingLoss = s.pendingLoss;
    // A snapshot from before the loss was scaled (or of another precision) starts the scale afresh.
    if (this.scaler && s.lossScale) this.scaler.state = s.lossScale;
  }

  /**
   * Compiles a graph over this state's parameters (declared with `param`, as in the program) and
   * loads it into the state's worker, so each run reads the current parameters in place.
   */
  async reader(
    runtime: Runtime,
    build: (
      graph: Graph,
      param: (name: string, shape: number[]) => Tensor,
      frozen: (name: string, shape: number[]) => Tensor,
      target: TraceTarget,
    ) => Record<string, Tensor>,
  ): Promise<StateReader> {
    const graph = new Graph();
    const read = new Map<string, Tensor>();
    const frozen = new Map<string, Tensor>();
    const outputs = build(
      graph,
      this.declaring(graph, this.paramNames, read, 'parameter'),
      this.declaring(graph, this.frozenNames, frozen, 'frozen tensor'),
      { provider: runtime.provider },
    );
    const session = await runtime.load(
      compile(graph, outputs, 'state_reader', { provider: runtime.provider }),
      { lowMemory: this.lowMemory, near: this.session },
    );
    const binding = this.readingFrozen(
      { state: this.stateId, reads: Object.fromEntries([...read.keys()].map((k) => [k, k])), writes: {} },
      [...frozen.keys()],
    );
    return {
      run: (feeds, fetch) => session.run(feeds, fetch, binding),
      release: () => session.release(),
    };
  }

  async dispose(): Promise<void> {
    await this.session.dropState(this.stateId);
    await this.session.release();
    if (this.optimizer)
      for (const s of [this.optimizer.norm, ...this.optimizer.parts.map((p) => p.session)])
        await s?.release();
    for (const s of this.addedLosses) await s.release();
  }
}
