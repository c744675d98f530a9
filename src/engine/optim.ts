/**
 * Optimizers as graph builders: the update is part of the training-step graph, so one ONNX run
 * is one step (params, optimizer state, batch and learning rate in; loss, gradient norm, new
 * params and new state out). Update rules follow PyTorch's definitions so that numbers compare.
 * A step whose gradient norm is not finite leaves every parameter and state unchanged.
 */
import { grad } from './autodiff.js';
import type { Graph, Tensor } from './graph.js';
import { LOSS_SCALE_INPUT } from './loss-scale.js';
import * as T from './ops/index.js';
import { isStatic, numel, type Shape } from './shape.js';

export type OptimizerSpec =
  | { kind: 'sgd'; momentum?: number; weightDecay?: number }
  | { kind: 'adamw'; beta1?: number; beta2?: number; eps?: number; weightDecay?: number }
  | { kind: 'rmsprop'; alpha?: number; eps?: number; weightDecay?: number };

export interface TrainStepSpec {
  optimizer: OptimizerSpec;
  /** Global-norm clipping threshold; 0 disables. */
  gradClip: number;
}

/**
 * ∂loss/∂params. `scaled`: through the loss times a scalar `loss_scale` input, divided back in
 * float32 (loss-scale.ts), so a float16 backward pass keeps its small gradients; what comes out
 * is the gradient of the loss itself, or not finite where the scaled one overflowed.
 */
function gradients(graph: Graph, loss: Tensor, params: Map<string, Tensor>, scaled: boolean): Tensor[] {
  if (!scaled) return grad(loss, [...params.values()]);
  const scale = graph.input(LOSS_SCALE_INPUT, loss.dtype, []);
  return grad(T.mul(loss, scale), [...params.values()]).map((g) => T.div(g, T.cast(scale, g.dtype)));
}

/** Names of the graph's inputs and outputs for one parameter's state slot. */
export const stateName = (param: string, slot: string) => `${param}.${slot}`;
export const updatedName = (name: string) => `${name}.next`;

export interface TrainStepGraph {
  /** Scalar learning-rate input ('lr') and step-count input ('step', 1-based, float). */
  lr: Tensor;
  step: Tensor;
  /** State inputs per parameter name and slot (momentum buffer, Adam's m and v, ...). */
  state: Map<string, Tensor>;
  /** Outputs: `loss`, `grad_norm`, `finite` (1 or 0), and `<name>.next` for every parameter and state slot. */
  outputs: Record<string, Tensor>;
}

function slotsOf(spec: OptimizerSpec): string[] {
  if (spec.kind === 'adamw') return ['m', 'v'];
  if (spec.kind === 'rmsprop') return ['sq'];
  return spec.momentum ? ['buf'] : [];
}

/** Adds gradient, clipping and the optimizer update for `params` (graph inputs) to the graph. */
export function buildTrainStep(
  graph: Graph,
  loss: Tensor,
  params: Map<string, Tensor>,
  spec: TrainStepSpec,
  layout: UpdateLayout = 'per-tensor',
  scaled = false,
): TrainStepGraph {
  const grads = gradients(graph, loss, params, scaled);
  const applied = applyGradients(graph, params, grads, spec, loss.dtype, layout);
  return { ...applied, outputs: { loss, ...applied.outputs } };
}

/** The accumulator of a parameter's gradient between OptimStep calls (a state key). */
export const gradAccName = (param: string) => `${param}.grad_acc`;

/**
 * Gradient accumulation without an update (a training API's forward_backward): `<name>.grad_acc`
 * inputs, and `<name>.grad_acc.next` = accumulator + ∂loss/∂param as outputs beside `loss`.
 */
export function buildGradAccumulation(
  graph: Graph,
  loss: Tensor,
  params: Map<string, Tensor>,
  scaled = false,
): { accumulators: Map<string, Tensor>; outputs: Record<string, Tensor> } {
  const grads = gradients(graph, loss, params, scaled);
  const accumulators = new Map<string, Tensor>();
  const outputs: Record<string, Tensor> = { loss };
  [...params].forEach(([name, p], i) => {
    const acc = graph.input(gradAccName(name), p.dtype, p.shape);
    accumulators.set(name, acc);
    outputs[updatedName(gradAccName(name))] = T.add(acc, grads[i]!);
  });
  return { accumulators, outputs };
}

/**
 * The optimizer step on accumulated gradients (optim_step): the same clipping and update as
 * buildTrainStep with the accumulators as the gradient, and the accumulators reset to zero — as
 * outputs, or (`zeroOutputs` false) by whoever holds them (StateBinding.zero: in place on the host).
 */
export function buildAccumulatedStep(
  graph: Graph,
  params: Map<string, Tensor>,
  spec: TrainStepSpec,
  dtype: Tensor['dtype'],
  layout: UpdateLayout = 'per-tensor',
  zeroOutputs = true,
  /** The gradient norm over every parameter, fed as `grad_norm` (one part of a step: optimizerParts). */
  normFed = false,
): TrainStepGraph {
  const accs = [...params].map(([name, p]) => graph.input(gradAccName(name), dtype, p.shape));
  const norm = normFed ? graph.input(GRAD_NORM, dtype, []) : undefined;
  const applied = applyGradients(graph, params, accs, spec, dtype, layout, norm);
  if (zeroOutputs)
    [...params].forEach(([name, p]) => {
      // A constant, not acc·0: a non-finite accumulator must still come back as zeros.
      applied.outputs[updatedName(gradAccName(name))] = T.expand(T.scalar(graph, 0, dtype), p.shape);
    });
  return applied;
}

/** The global gradient norm, an output of every step and an input of an update in parts. */
export const GRAD_NORM = 'grad_norm';

/**
 * The first run of an optimizer step in parts (optimizerParts): the accumulated gradients' norm
 * over every parameter, computed as one graph's step computes it (so the parts clip and skip
 * exactly as one graph would), and the finite flag.
 */
export function buildGradNorm(
  graph: Graph,
  shapes: Map<string, Shape>,
  dtype: Tensor['dtype'],
): Record<string, Tensor> {
  const accs = [...shapes].map(([name, shape]) => graph.input(gradAccName(name), dtype, shape));
  const gradNorm = globalNorm(accs);
  return { [GRAD_NORM]: gradNorm, finite: asFlag(graph, finiteOf(gradNorm), dtype) };
}

/**
 * Parameters grouped, in order, into parts of at least `bytes` each (a tensor is never split; a
 * last part under half of `bytes` joins the one before, rather than cost a run of its own). An
 * optimizer step whose parts run one after another holds one part's outputs at a time:
 * onnxruntime-node hands each output back as a copy of what it wrote, so one run over every
 * parameter briefly holds a second copy of the parameters and every slot.
 */
export function optimizerParts(
  shapes: Map<string, Shape>,
  bytesPerElement: number,
  bytes: number,
): string[][] {
  const parts: string[][] = [[]];
  let size = 0;
  for (const [name, shape] of shapes) {
    if (size >= bytes) {
      parts.push([]);
      size = 0;
    }
    parts.at(-1)!.push(name);
    size += numel(shape) * bytesPerElement;
  }
  if (parts.length > 1 && size < bytes / 2) parts.at(-2)!.push(...parts.pop()!);
  return parts;
}

/**
 * √Σ‖g‖², summed in the order given: one expression for a whole step and for a norm run, so a
 * step in parts clips by the very float a single run computes.
 */
const globalNorm = (gs: Tensor[]): Tensor =>
  T.sqrt(gs.map((g) => T.reduceSum(T.mul(g, g))).reduce((a, b) => T.add(a, b)));

/** NaN ≠ NaN and Inf − Inf is NaN: one comparison catches both. */
const finiteOf = (x: Tensor): Tensor => T.equal(T.sub(x, x), 0);

/**
 * The flag goes out as 1 or 0 in the loss's dtype: ONNX Runtime's WebGPU provider has no bool
 * Identity, and the graph output's copy to the CPU would stop the device between the backward
 * pass and the update (`duel bench placement`).
 */
const asFlag = (graph: Graph, flag: Tensor, dtype: Tensor['dtype']): Tensor =>
  T.where(flag, T.scalar(graph, 1, dtype), T.scalar(graph, 0, dtype));

/**
 * How the update is laid out in the graph. 'per-tensor': the rule once per parameter (~22 nodes
 * each: over 900 of the reference stack's 1 600-node AdamW step). 'flat': gradients, parameters
 * and slots concatenated into one vector each, updated by one chain of elementwise nodes and split
 * back, as PyTorch's foreach/fused optimizers batch theirs. The numbers are the same (the gradient
 * norm sums in another order). Flat pays a copy of the state each step (and the device memory
 * for it while the step runs) and saves ~20 nodes a parameter: a GPU's cost is per node (a
 * dispatch, ~9 µs of host time on the H200), a CPU's per byte (`duel bench engine
 * --compare-layouts` on 2 cores: the reference step 328–348 ms flat against 309–319 per tensor).
 */
export type UpdateLayout = 'per-tensor' | 'flat';

/** The layout a provider's steps use unless asked: flat where nodes cost dispatches (a GPU's). */
export const defaultUpdateLayout = (provider: string): UpdateLayout =>
  provider === 'cpu' ? 'per-tensor' : 'flat';

/** Clipping and the optimizer update of `params` by `grads`; a step with a non-finite norm changes nothing. */
function applyGradients(
  graph: Graph,
  params: Map<string, Tensor>,
  grads: Tensor[],
  spec: TrainStepSpec,
  dtype: Tensor['dtype'],
  layout: UpdateLayout,
  /** The norm over every parameter, when these are some of them (a part of the step). */
  normOfAll?: Tensor,
): TrainStepGraph {
  const names = [...params.keys()];
  const lr = graph.input('lr', dtype, []);
  const step = graph.input('step', dtype, []);
  const state = new Map<string, Tensor>();
  const slots = slotsOf(spec.optimizer);
  for (const n of names) {
    for (const slot of slots) {
      state.set(stateName(n, slot), graph.input(stateName(n, slot), dtype, params.get(n)!.shape));
    }
  }
  const groups = layout === 'flat' ? [names.map((_, i) => i)] : names.map((_, i) => [i]);
  const pack = groupPacking(names.map((n) => params.get(n)!.shape));
  const gradGroups = groups.map((group) => pack.join(grads, group));
  const gradNorm = normOfAll ?? globalNorm(gradGroups);
  const finite = finiteOf(gradNorm);
  const scale = spec.gradClip > 0 ? T.minimum(T.div(spec.gradClip, T.add(gradNorm, 1e-6)), 1) : undefined;
  // A part of a step reads its norm and flag from the norm run, which outputs them.
  const outputs: Record<string, Tensor> = normOfAll
    ? {}
    : { [GRAD_NORM]: gradNorm, finite: asFlag(graph, finite, dtype) };
  const paramList = names.map((n) => params.get(n)!);
  groups.forEach((group, k) => {
    const p = pack.join(paramList, group);
    const slotOf = new Map(
      slots.map((slot) => [
        slot,
        pack.join(
          names.map((n) => state.get(stateName(n, slot))!),
          group,
        ),
      ]),
    );
    const g = scale ? T.mul(gradGroups[k]!, scale) : gradGroups[k]!;
    const updates = update(spec.optimizer, p, g, lr, step, (slot) => slotOf.get(slot)!);
    const write = (key: (name: string) => string, next: Tensor, prev: Tensor) =>
      pack.part(T.where(finite, next, prev), group).forEach((piece, j) => {
        outputs[updatedName(key(names[group[j]!]!))] = piece;
      });
    write((n) => n, updates.param, p);
    for (const [slot, value] of Object.entries(updates.state)) {
      write((n) => stateName(n, slot), value, slotOf.get(slot)!);
    }
  });
  return { lr, step, state, outputs };
}

/** Tensors of a group of parameters as one vector (`join`) and one vector back as the group's tensors (`part`). */
function groupPacking(shapes: Shape[]) {
  const size = (i: number) => {
    const shape = shapes[i]!;
    if (!isStatic(shape)) throw new Error(`optimizer: a flat update needs static shapes, got [${shape}]`);
    return numel(shape);
  };
  return {
    join: (ts: Tensor[], group: number[]): Tensor =>
      group.length === 1
        ? ts[group[0]!]!
        : T.concat(
            group.map((i) => T.reshape(ts[i]!, [size(i)])),
            0,
          ),
    part: (v: Tensor, group: number[]): Tensor[] =>
      group.length === 1
        ? [v]
        : T.splitSizes(v, 0, group.map(size)).map((piece, j) => T.reshape(piece, shapes[group[j]!]!)),
  };
}

function update(
  spec: OptimizerSpec,
  p: Tensor,
  g: Tensor,
  lr: Tensor,
  step: Tensor,
  slot: (name: string) => Tensor,
): { param: Tensor; state: Record<string, Tensor> } {
  switch (spec.kind) {
    case 'sgd': {
      // PyTorch SGD: weight decay is L2 added to the gradient; buf ← μ·buf + g.
      const wd = spec.weightDecay ?? 0;
      const d = wd ? T.add(g, T.mul(p, wd)) : g;
      if (!spec.momentum) return { param: T.sub(p, T.mul(lr, d)), state: {} };
      const buf = T.add(T.mul(slot('buf'), spec.momentum), d);
      return { param: T.sub(p, T.mul(lr, buf)), state: { buf } };
    }
    case 'adamw': {
      // Decoupled weight decay (Loshchilov & Hutter): p ← p(1 − lr·λ) − lr·m̂/(√v̂ + ε).
      const [b1, b2, eps, wd] = [
        spec.beta1 ?? 0.9,
        spec.beta2 ?? 0.999,
        spec.eps ?? 1e-8,
        spec.weightDecay ?? 0,
      ];
      const m = T.add(T.mul(slot('m'), b1), T.mul(g, 1 - b1));
      const v = T.add(T.mul(slot('v'), b2), T.mul(T.mul(g, g), 1 - b2));
      const mHat = T.div(m, T.sub(1, T.pow(T.scalar(p.graph, b1, p.dtype), step)));
      const vHat = T.div(v, T.sub(1, T.pow(T.scalar(p.graph, b2, p.dtype), step)));
      const decayed = wd ? T.mul(p, T.sub(1, T.mul(lr, wd))) : p;
      return { param: T.sub(decayed, T.mul(lr, T.div(mHat, T.add(T.sqrt(vHat), eps)))), state: { m, v } };
    }
    case 'rmsprop': {
      // PyTorch RMSprop: sq ← α·sq + (1 − α)g²; p ← p − lr·g/(√sq + ε).
      const [alpha, eps, wd] = [spec.alpha ?? 0.99, spec.eps ?? 1e-8, spec.weightDecay ?? 0];
      const d = wd ? T.add(g, T.mul(p, wd)) : g;
      const sq = T.add(T.mul(slot('sq'), alpha), T.mul(T.mul(d, d), 1 - alpha));
      return { param: T.sub(p, T.mul(lr, T.div(d, T.add(T.sqrt(sq), eps)))), state: { sq } };
    }
  }
}

export interface ScheduleSpec {
  kind: 'constant' | 'linear' | 'cosine';
  peakLr: number;
  warmupSteps: number;
  totalSteps: number;
  /** The floor the decay reaches, as a fraction of the peak. @default 0 */
  minRatio?: number;
}

/** Learning rate at a 1-based step: linear warmup to the peak, then constant, linear or cosine decay. */
export function learningRate(s: ScheduleSpec, step: number): number {
  if (s.warmupSteps > 0 && step <= s.warmupSteps) return (s.peakLr * step) / s.warmupSteps;
  if (s.kind === 'constant') return s.peakLr;
  const span = Math.max(1, s.totalSteps - s.warmupSteps);
  const progress = Math.min(1, Math.max(0, (step - s.warmupSteps) / span));
  const floor = s.minRatio ?? 0;
  const shape = s.kind === 'linear' ? 1 - progress : 0.5 * (1 + Math.cos(Math.PI * progress));
  return s.peakLr * (floor + (1 - floor) * shape);
}

export { slotsOf as optimizerSlots };
