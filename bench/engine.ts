/**
 * `duel bench engine`: the machine's ceiling (ONNX Runtime MatMul), the reference stack's training
 * step on duel's engine (counted FLOPs, achieved GFLOP/s, fraction of the ceiling), peak memory,
 * time to a ready training state, and the same step in TensorFlow.js (wasm) as the peer, all in
 * one run so the figures compare. On another provider (`--provider webgpu`) the ceiling and the
 * step are that provider's, the CPU provider's step on the same machine is the peer, and the
 * result says which adapter ran it, the bytes that crossed to and from the device per step, and
 * the device memory the training state held after the first step and after the last.
 */

import { spawnSync } from 'node:child_process';
import { cpus, totalmem } from 'node:os';
import {
  buildTrainStep,
  compile,
  countFlops,
  type DeviceStats,
  defaultUpdateLayout,
  Graph,
  type Moved,
  type Provider,
  Runtime,
  type ScheduleSpec,
  T,
  type Tensor,
  TrainingState,
  type TrainProgram,
  type TrainStepSpec,
  toFloat16,
  type UpdateLayout,
} from '../src/engine/index.js';
import { initLlamaWeights } from '../src/models/llama/weights.js';
import { type AdapterInfo, requireAdapter } from '../src/platform/gpu-adapter.js';
import { benchScript } from '../src/platform/paths.js';
import { median } from './measure.js';
import { STACKS, type StackShape, stackConfig, stackFeeds, stackProgram } from './reference-stack.js';

export interface EngineBenchOptions {
  /** Timed training steps per side (after warm-up steps). */
  steps: number;
  /** Matrix size of the ceiling measurement. */
  ceilingSize: number;
  /** Run the peer: TensorFlow.js on cpu (the reference stack only), the cpu provider otherwise. */
  peer: boolean;
  /** @default 'cpu' */
  provider?: Provider;
  /** A name of STACKS. @default 'stack' */
  model?: string;
  /** The optimizer update's layout (optim.ts). @default the provider's (TrainingState) */
  updateLayout?: UpdateLayout;
  /** Also time the step with the other layout, same provider, same run. */
  compareLayouts?: boolean;
  log: (line: string) => void;
}

export interface EngineBenchResult {
  machine: { cpus: number; cpu_model: string; memory_gb: number; node: string; ort_threads: number };
  provider: Provider;
  /** The adapter Dawn offers (webgpu only). */
  adapter?: AdapterInfo;
  model: string;
  shape: StackShape;
  ceiling_gflops: number;
  /** The same MatMul in float16, on an adapter with shader-f16 (webgpu only). */
  ceiling_gflops_float16?: number;
  /** Microseconds per run of a one-node graph, and per further tiny node (dispatchCost). */
  dispatch: { run_us: number; node_us: number };
  train_step_ms: number;
  /** The optimizer update's layout in that step. */
  update_layout: UpdateLayout;
  /** The same step with the other layout (--compare-layouts), and the nodes of each graph. */
  layouts?: Record<UpdateLayout, { step_ms: number; nodes: number }>;
  /** Per-step time when FOLD steps run as one ONNX Loop. */
  folded_step_ms: number;
  train_flops: number;
  train_matmul_flops: number;
  train_gflops: number;
  fraction_of_ceiling: number;
  build_ms: { trace: number; compile: number; session: number; total: number };
  peak_rss_mb: number;
  loss_first: number;
  loss_last: number;
  tfjs?: {
    backend: string;
    simd: boolean;
    multithread: boolean;
    step_ms: number;
    first_loss: number;
    last_loss: number;
    peak_rss_mb: number;
  };
  tfjs_speedup?: number;
  /** Bytes between host and device per training step (zero on cpu). */
  moved_per_step: Moved;
  /** Device memory the training state held after the first step and after the last. */
  device_state: { first: DeviceStats; last: DeviceStats };
  /** The cpu provider's step on this machine (another provider's run, with the peer). */
  cpu_step_ms?: number;
  speedup_vs_cpu?: number;
}

const FOLD = 4;

export async function timed(label: string, n: number, log: (l: string) => void, run: () => Promise<unknown>) {
  const times: number[] = [];
  const start = performance.now();
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await run();
    times.push(performance.now() - t0);
    const elapsed = (performance.now() - start) / 1000;
    const eta = (elapsed / (i + 1)) * (n - i - 1);
    log(`  ${label} ${i + 1}/${n}: ${times.at(-1)!.toFixed(0)} ms (ETA ${eta.toFixed(0)} s)`);
  }
  return median(times);
}

/**
 * GFLOP/s of one large MatMul (float32, or float16 where the adapter has half-precision shaders);
 * the sum keeps the output transfer negligible.
 */
export async function ceiling(
  runtime: Runtime,
  n: number,
  reps: number,
  log: (l: string) => void,
  dtype: 'float32' | 'float16' = 'float32',
): Promise<number> {
  const g = new Graph();
  const a = g.input('a', dtype, [n, n]);
  const b = g.input('b', dtype, [n, n]);
  const session = await runtime.load(compile(g, { s: T.reduceSum(T.matmul(a, b)) }, `matmul_${dtype}`));
  const values = Float32Array.from({ length: n * n }, (_, i) => ((i * 7919) % 1000) / 1000 - 0.5);
  const data = dtype === 'float16' ? toFloat16(values) : values;
  await session.setState('m', {
    a: { dtype, dims: [n, n], data },
    b: { dtype, dims: [n, n], data: data.slice() },
  });
  const run = () => session.run({}, ['s'], { state: 'm', reads: { a: 'a', b: 'b' }, writes: {} });
  await run();
  const ms = await timed(`matmul ${n}³ ${dtype}`, reps, log, run);
  // Freed, so that the device memory reported for the training state is the state's alone.
  await session.dropState('m');
  await session.release();
  return (2 * n ** 3) / (ms / 1000) / 1e9;
}

/**
 * What a provider charges besides arithmetic: one run of a one-node graph (feeds, the output back
 * to the host, the wait), and each further node of a chain of tiny Adds on 256 floats (the
 * difference of two chains). Steps made of many small nodes (decoding, small models) are bound by
 * these rather than by the MatMul ceiling.
 */
export async function dispatchCost(runtime: Runtime, reps: number, log: (l: string) => void) {
  const chain = async (n: number) => {
    const g = new Graph();
    const x = g.input('x', 'float32', [256]);
    let y: Tensor = x;
    for (let i = 0; i < n; i++) y = T.add(y, 1e-3 * (i + 1));
    const session = await runtime.load(compile(g, { y }));
    const data = new Float32Array(256).fill(0.5);
    await session.setState('c', { x: { dtype: 'float32', dims: [256], data } });
    const run = () => session.run({}, ['y'], { state: 'c', reads: { x: 'x' }, writes: {} });
    await run();
    const ms = await timed(`${n} chained adds`, reps, log, run);
    await session.dropState('c');
    await session.release();
    return ms;
  };
  const [one, many] = [await chain(1), await chain(513)];
  return { run_us: one * 1000, node_us: ((many - one) * 1000) / 512 };
}

export async function runEngineBench(opts: EngineBenchOptions): Promise<EngineBenchResult> {
  const { log } = opts;
  const provider = opts.provider ?? 'cpu';
  const model = opts.model ?? 'stack';
  const shape = STACKS[model];
  if (!shape) throw new Error(`unknown model '${model}' (known: ${Object.keys(STACKS).join(', ')})`);
  const adapter = provider === 'webgpu' ? await requireAdapter() : undefined;
  if (adapter) log(`adapter: ${adapter.vendor} ${adapter.device} (${adapter.description})`);
  const runtime = new Runtime({ workers: 1, provider });
  try {
    log(`ceiling: ONNX Runtime MatMul, float32, ${provider}`);
    const ceilingGflops = await ceiling(runtime, opts.ceilingSize, 5, log);
    // Half precision, where the adapter offers it as ONNX Runtime asks for it (gpu-adapter.ts).
    let ceilingF16: number | undefined;
    if (adapter?.shaderF16) {
      log(`ceiling: ONNX Runtime MatMul, float16, ${provider}`);
      ceilingF16 = await ceiling(runtime, opts.ceilingSize, 5, log, 'float16');
    }
    const dispatch = await dispatchCost(runtime, 5, log);

    log(`train step: ${model} ${JSON.stringify(shape)}`);
    const cfg = stackConfig(shape);
    const program = stackProgram(cfg);
    const spec: TrainStepSpec = { optimizer: { kind: 'adamw', weightDecay: 0 }, gradClip: 0 };
    const schedule: ScheduleSpec = { kind: 'constant', peakLr: 1e-3, warmupSteps: 0, totalSteps: 1 };
    const layout = opts.updateLayout ?? defaultUpdateLayout(provider);
    const state = await TrainingState.create(runtime, program, spec, schedule, initLlamaWeights(cfg, 0), {
      updateLayout: layout,
    });
    const t = state.timings;
    log(
      `  ready in ${(t.traceMs + t.compileMs + t.sessionMs).toFixed(0)} ms (trace ${t.traceMs.toFixed(0)}, compile ${t.compileMs.toFixed(0)}, session ${t.sessionMs.toFixed(0)})`,
    );

    // Count the work of the very graph that runs: rebuild it (tracing is cheap) and count.
    const flops = countTrainFlops(program, spec, shape, layout, provider);
    const batch = stackFeeds(shape);
    // Two warm-up steps: the first sizes ONNX Runtime's arena, the second still pays for it.
    const first = await state.step(batch);
    const firstState = await state.runner.deviceStats();
    await state.step(batch);
    let last = first;
    const before = { ...state.runner.moved };
    const stepMs = await timed('duel step', opts.steps, log, async () => {
      last = await state.step(batch);
    });
    const moved = {
      toDevice: (state.runner.moved.toDevice - before.toDevice) / opts.steps,
      toHost: (state.runner.moved.toHost - before.toHost) / opts.steps,
      readBacks: (state.runner.moved.readBacks - before.readBacks) / opts.steps,
    };
    const lastState = await state.runner.deviceStats();
    await state.dispose();
    let layouts: EngineBenchResult['layouts'];
    if (opts.compareLayouts) {
      const other: UpdateLayout = layout === 'flat' ? 'per-tensor' : 'flat';
      log(`the same step, the update ${other}`);
      const alt = await TrainingState.create(runtime, program, spec, schedule, initLlamaWeights(cfg, 0), {
        updateLayout: other,
      });
      await alt.step(batch);
      await alt.step(batch);
      const altMs = await timed(`${other} step`, opts.steps, log, () => alt.step(batch));
      await alt.dispose();
      layouts = {
        [layout]: { step_ms: stepMs, nodes: countTrainNodes(program, spec, layout, provider) },
        [other]: { step_ms: altMs, nodes: countTrainNodes(program, spec, other, provider) },
      } as NonNullable<EngineBenchResult['layouts']>;
    }
    const peakRss = process.resourceUsage().maxRSS / 1024;

    log(`folded: ${FOLD} steps in one ONNX Loop`);
    const folded = await TrainingState.create(runtime, program, spec, schedule, initLlamaWeights(cfg, 0), {
      fold: true,
    });
    await folded.stepMany([batch]);
    const foldMs =
      (await timed(`loop of ${FOLD}`, Math.max(1, Math.ceil(opts.steps / FOLD)), log, () =>
        folded.stepMany(Array.from({ length: FOLD }, () => batch)),
      )) / FOLD;
    await folded.dispose();
    const trainGflops = flops.total / (stepMs / 1000) / 1e9;

    const result: EngineBenchResult = {
      machine: {
        cpus: cpus().length,
        cpu_model: cpus()[0]?.model ?? 'unknown',
        memory_gb: Math.round(totalmem() / 2 ** 30),
        node: process.version,
        ort_threads: runtime.intraOpThreads,
      },
      provider,
      ...(adapter ? { adapter } : {}),
      model,
      shape,
      ceiling_gflops: ceilingGflops,
      ...(ceilingF16 !== undefined ? { ceiling_gflops_float16: ceilingF16 } : {}),
      dispatch,
      train_step_ms: stepMs,
      update_layout: layout,
      ...(layouts ? { layouts } : {}),
      folded_step_ms: foldMs,
      train_flops: flops.total,
      train_matmul_flops: flops.matmul,
      train_gflops: trainGflops,
      fraction_of_ceiling: trainGflops / ceilingGflops,
      build_ms: {
        trace: t.traceMs,
        compile: t.compileMs,
        session: t.sessionMs,
        total: t.traceMs + t.compileMs + t.sessionMs,
      },
      peak_rss_mb: peakRss,
      loss_first: first.loss,
      loss_last: last.loss,
      moved_per_step: moved,
      device_state: { first: firstState, last: lastState },
    };

    if (opts.peer && provider !== 'cpu') {
      log('peer: the cpu provider, same model, same machine');
      const cpuRuntime = new Runtime({ workers: 1 });
      try {
        const onCpu = await TrainingState.create(
          cpuRuntime,
          program,
          spec,
          schedule,
          initLlamaWeights(cfg, 0),
        );
        await onCpu.step(batch);
        await onCpu.step(batch);
        result.cpu_step_ms = await timed('cpu step', opts.steps, log, () => onCpu.step(batch));
        result.speedup_vs_cpu = result.cpu_step_ms / stepMs;
        await onCpu.dispose();
      } finally {
        await cpuRuntime.close();
      }
    } else if (opts.peer && model === 'stack') {
      log('peer: TensorFlow.js (wasm backend), same stack, own process');
      const script = benchScript('tfjs-peer.js');
      const child = spawnSync(process.execPath, [script, String(opts.steps)], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'inherit'],
        maxBuffer: 1 << 20,
      });
      if (child.status !== 0)
        throw new Error(`TensorFlow.js peer failed (exit ${child.status}); is @tensorflow/tfjs installed?`);
      const peer = JSON.parse(child.stdout.trim().split('\n').at(-1)!) as NonNullable<
        EngineBenchResult['tfjs']
      >;
      result.tfjs = peer;
      result.tfjs_speedup = peer.step_ms / stepMs;
    }
    return result;
  } finally {
    await runtime.close();
  }
}

/** The training-step graph as the bench runs it (tracing is cheap): rebuilt to count what is in it. */
function traceTrainStep(
  program: TrainProgram,
  spec: TrainStepSpec,
  layout: UpdateLayout,
  provider: Provider,
) {
  const g = new Graph();
  const params = new Map<string, Tensor>();
  const declare = (name: string, shape: number[]) => {
    const p = g.input(name, 'float32', shape);
    params.set(name, p);
    return p;
  };
  const loss = program.build(g, declare, declare, { provider });
  return { graph: g, outputs: buildTrainStep(g, loss, params, spec, layout).outputs };
}

/** Counts the work of the training-step graph itself: forward, backward and the AdamW update. */
function countTrainFlops(
  program: TrainProgram,
  spec: TrainStepSpec,
  shape: StackShape,
  layout: UpdateLayout,
  provider: Provider,
) {
  const { graph, outputs } = traceTrainStep(program, spec, layout, provider);
  return countFlops(graph, outputs, { B: shape.batch, T: shape.seq });
}

/** ONNX nodes of the training-step graph with this update layout. */
function countTrainNodes(
  program: TrainProgram,
  spec: TrainStepSpec,
  layout: UpdateLayout,
  provider: Provider,
): number {
  const { graph, outputs } = traceTrainStep(program, spec, layout, provider);
  return compile(graph, outputs, 'count', { provider }).nodeCount;
}
