/**
 * The step loop every trainer shares: shuffled batches of record indices, epoch by epoch; a step
 * whose loss or gradient is not finite is skipped (the optimizer already left the weights alone)
 * and counted; the run is diverged when no step applied or the last one was skipped (the final
 * weights do not give a finite loss). Under loss scaling (a float16 backward pass), a finite loss
 * whose gradient is not is the scaled gradient's overflow: the scale halves and the step is
 * counted apart, as GradScaler's skipped steps are a normal part of mixed-precision training.
 * Returns the metrics and final weights.
 */
import {
  allocate,
  type OptimizerSpec,
  type ScheduleSpec,
  type StepMetrics,
  type TrainingState,
  type WireTensor,
} from '../engine/index.js';
import type { HostTensor } from '../models/llama/weights.js';

export interface RoundMetrics {
  algo: string;
  steps: number;
  skipped_steps: number;
  loss_first: number;
  loss_last: number;
  loss_mean: number;
  grad_norm_mean: number;
  tokens: number;
  seconds: number;
  tokens_per_s: number;
  diverged: boolean;
  /** Under loss scaling (float16): steps skipped because the scaled gradient overflowed. */
  overflow_steps?: number;
  /** Under loss scaling: the scale the round ended with. */
  loss_scale?: number;
  /**
   * Megabytes the steps moved between host and device per step (on a GPU provider; Session.moved):
   * on cuda the weights and optimizer state both ways each call, divided by the steps folded into it.
   */
  moved_mb_per_step?: number;
  /** Times the recipe redrew its own samples from the current weights (SPO). */
  resamples?: number;
  /** After the round (train-round.ts): mean ℓ = logp_θ − logp_t over the round's completions. */
  mean_ell?: number;
  /** Mean Δ over winner/loser pairs (with a reference model and prefs). */
  mean_delta?: number;
  /** KL(π_θ‖π_ref) on one fresh sample per prompt (mean of logp_θ − logp_ref). */
  kl_to_ref?: number;
  /** Mean next-token entropy and length of those fresh samples. */
  entropy?: number;
  completion_length?: number;
}

/** What every trainer is told about optimisation and batching. */
export interface LoopSettings {
  optimizer: OptimizerSpec;
  lr: number;
  /** Steps to run; default: `epochs` passes over the records. */
  steps?: number;
  epochs?: number;
  batchSize: number;
  /** Global-norm clipping; 0 disables. */
  gradClip: number;
  /** Learning-rate shape over the run: linear warmup, then constant, linear or cosine decay. @default constant */
  schedule?: 'constant' | 'linear' | 'cosine';
  warmupSteps?: number;
  seed: number;
  onStep?: (step: number, total: number, loss: number, tokens: number) => void;
}

export interface StepLoop {
  algo: string;
  records: number;
  batchSize: number;
  /** Steps to run; default: `epochs` passes over the records. */
  steps?: number;
  epochs?: number;
  draw: () => number;
  /** The feeds of one batch of record indices, and the tokens it holds. */
  feeds(batch: number[]): { feeds: Record<string, WireTensor>; tokens: number };
  /** Runs before step `step` (0-based) with the state as it is then (e.g. SPO's resampling). */
  beforeStep?: (step: number) => Promise<void>;
  onStep?: (step: number, total: number, loss: number, tokens: number) => void;
  /**
   * Steps per run of a folded state (TrainingState's `fold`): up to this many batches go in at
   * once, padded to one shape (foldBatches). Not with `beforeStep`, which must see each step.
   */
  fold?: number;
}

export async function runSteps(
  state: TrainingState,
  o: StepLoop,
): Promise<{ weights: Record<string, HostTensor>; metrics: RoundMetrics }> {
  const perEpoch = Math.ceil(o.records / o.batchSize);
  const total = stepCount(o, o.records);
  const order = Array.from({ length: o.records }, (_, i) => i);
  const losses: number[] = [];
  const norms: number[] = [];
  let [skipped, overflows, tokens] = [0, 0, 0];
  let lastSkipped = false;
  const fold = o.fold ?? 1;
  if (fold > 1 && o.beforeStep) throw new Error('runSteps: a folded run cannot act between its steps');
  const start = performance.now();
  for (let step = 0; step < total; ) {
    const group: { feeds: Record<string, WireTensor>; tokens: number }[] = [];
    for (let k = 0; k < Math.min(fold, total - step); k++) {
      const s = step + k;
      if (s % perEpoch === 0) shuffle(order, o.draw);
      const at = (s % perEpoch) * o.batchSize;
      await o.beforeStep?.(s);
      group.push(o.feeds(order.slice(at, at + o.batchSize)));
    }
    const stepped: StepMetrics[] = [];
    if (fold === 1) stepped.push(await state.step(group[0]!.feeds));
    else
      for (const run of foldBatches(group.map((b) => b.feeds))) stepped.push(...(await state.stepMany(run)));
    for (const [k, m] of stepped.entries()) {
      tokens += group[k]!.tokens;
      if (m.lossScale !== undefined && !m.applied && Number.isFinite(m.loss)) overflows++;
      else {
        lastSkipped = !m.applied || !Number.isFinite(m.loss);
        if (lastSkipped) skipped++;
        else {
          losses.push(m.loss);
          norms.push(m.gradNorm);
        }
      }
      o.onStep?.(step + k + 1, total, m.loss, tokens);
    }
    step += group.length;
  }
  const seconds = (performance.now() - start) / 1000;
  const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Number.NaN);
  const metrics: RoundMetrics = {
    algo: o.algo,
    steps: total,
    skipped_steps: skipped,
    loss_first: losses[0] ?? Number.NaN,
    loss_last: losses.at(-1) ?? Number.NaN,
    loss_mean: mean(losses),
    grad_norm_mean: mean(norms),
    tokens,
    seconds,
    tokens_per_s: tokens / seconds,
    // The weights a round ends with must give a finite loss and gradient on its last batch.
    diverged: losses.length === 0 || lastSkipped,
  };
  const scale = state.lossScale;
  if (scale) Object.assign(metrics, { overflow_steps: overflows, loss_scale: scale.scale });
  const { toDevice, toHost } = state.runner.moved;
  if (toDevice + toHost > 0) metrics.moved_mb_per_step = (toDevice + toHost) / 1e6 / total;
  const params = await state.parameters();
  const weights = Object.fromEntries(
    Object.entries(params).map(([k, t]) => [
      k,
      { dtype: 'float32' as const, dims: t.dims, data: t.data as Float32Array },
    ]),
  );
  return { weights, metrics };
}

/**
 * Consecutive batches as runs of one folded call: each run's batches padded to one shape, with
 * zeros at the end of every axis but the first. For a round's feeds that changes nothing: a
 * padded position has attention mask 0 (no real token attends to it) and target mask 0 (it adds
 * nothing to any log-prob), and a padded feature column is never read. The first axis counts rows,
 * which a loss averages over, so a batch with another row count (an epoch's short last batch)
 * starts a new run.
 */
export function foldBatches(batches: Record<string, WireTensor>[]): Record<string, WireTensor>[][] {
  const runs: Record<string, WireTensor>[][] = [];
  for (const b of batches) {
    const last = runs.at(-1);
    const rows = (x: Record<string, WireTensor>) => JSON.stringify(Object.values(x).map((t) => t.dims[0]));
    if (last && rows(last[0]!) === rows(b)) last.push(b);
    else runs.push([b]);
  }
  return runs.map(padToOneShape);
}

function padToOneShape(batches: Record<string, WireTensor>[]): Record<string, WireTensor>[] {
  const names = Object.keys(batches[0]!);
  const target = Object.fromEntries(
    names.map((n) => [
      n,
      batches[0]![n]!.dims.map((_, axis) => Math.max(...batches.map((b) => b[n]!.dims[axis]!))),
    ]),
  );
  return batches.map((b) => Object.fromEntries(names.map((n) => [n, padEnd(b[n]!, target[n]!)])));
}

/** `t` with zeros after its values along every axis, to `dims`. */
function padEnd(t: WireTensor, dims: number[]): WireTensor {
  if (t.dims.every((d, i) => d === dims[i])) return t;
  const data = allocate(
    t.dtype,
    dims.reduce((a, b) => a * b, 1),
  );
  const strides = (ds: readonly number[]) => ds.map((_, i) => ds.slice(i + 1).reduce((a, b) => a * b, 1));
  const [from, to] = [strides(t.dims), strides(dims)];
  const inner = t.dims.at(-1) ?? 1;
  // Copy row by row (the last axis is contiguous in both).
  const rows = t.data.length / inner;
  for (let r = 0; r < rows; r++) {
    let offset = 0;
    let rest = r * inner;
    for (let axis = 0; axis < t.dims.length - 1; axis++) {
      const index = Math.floor(rest / from[axis]!);
      rest -= index * from[axis]!;
      offset += index * to[axis]!;
    }
    (data as Float32Array).set((t.data as Float32Array).subarray(r * inner, (r + 1) * inner), offset);
  }
  return { dtype: t.dtype, dims, data };
}

/** Steps a run takes: `steps` when given, else `epochs` passes of batches over the records. */
export function stepCount(
  o: { steps?: number | undefined; epochs?: number | undefined; batchSize: number },
  records: number,
): number {
  return o.steps ?? Math.ceil(records / o.batchSize) * (o.epochs ?? 1);
}

/** The step count a run will take, and its learning-rate schedule. */
export function plan(o: LoopSettings, records: number): { steps: number; schedule: ScheduleSpec } {
  const steps = stepCount(o, records);
  return {
    steps,
    schedule: {
      kind: o.schedule ?? 'constant',
      peakLr: o.lr,
      warmupSteps: o.warmupSteps ?? 0,
      totalSteps: steps,
    },
  };
}

function shuffle(xs: number[], next: () => number): void {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
}
