/**
 * `duel bench engine`: the machine's ceiling (ONNX Runtime MatMul), the reference stack's training
 * step on duel's engine (counted FLOPs, achieved GFLOP/s, fraction of the ceiling), peak memory,
 * time to a ready training state, and the same step in TensorFlow.js (wasm) as the peer, all in
 * one run so the figures compare.
 */
import { spawnSync } from 'node:child_process';
import { cpus, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import {
  buildTrainStep,
  compile,
  countFlops,
  Graph,
  Runtime,
  type ScheduleSpec,
  T,
  type Tensor,
  TrainingState,
  type TrainStepSpec,
} from '../src/engine/index.js';
import { llamaForward } from '../src/models/llama/decoder.js';
import { tokenLogprobs } from '../src/models/llama/logprobs.js';
import { initLlamaWeights, llamaParams } from '../src/models/llama/weights.js';
import { STACK, stackBatch, stackConfig } from './reference-stack.js';

export interface EngineBenchOptions {
  /** Timed training steps per side (after warm-up steps). */
  steps: number;
  /** Matrix size of the ceiling measurement. */
  ceilingSize: number;
  /** Run the TensorFlow.js peer. */
  peer: boolean;
  log: (line: string) => void;
}

export interface EngineBenchResult {
  machine: { cpus: number; cpu_model: string; memory_gb: number; node: string; ort_threads: number };
  ceiling_gflops: number;
  train_step_ms: number;
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
}

const FOLD = 4;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function timed(label: string, n: number, log: (l: string) => void, run: () => Promise<unknown>) {
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

/** GFLOP/s of one large float32 MatMul; the sum keeps the output transfer negligible. */
async function ceiling(runtime: Runtime, n: number, reps: number, log: (l: string) => void): Promise<number> {
  const g = new Graph();
  const a = g.input('a', 'float32', [n, n]);
  const b = g.input('b', 'float32', [n, n]);
  const session = await runtime.load(compile(g, { s: T.reduceSum(T.matmul(a, b)) }));
  const data = Float32Array.from({ length: n * n }, (_, i) => ((i * 7919) % 1000) / 1000 - 0.5);
  await session.setState('m', {
    a: { dtype: 'float32', dims: [n, n], data },
    b: { dtype: 'float32', dims: [n, n], data: data.slice() },
  });
  const run = () => session.run({}, ['s'], { state: 'm', reads: { a: 'a', b: 'b' }, writes: {} });
  await run();
  const ms = await timed(`matmul ${n}³`, reps, log, run);
  await session.release();
  return (2 * n ** 3) / (ms / 1000) / 1e9;
}

export async function runEngineBench(opts: EngineBenchOptions): Promise<EngineBenchResult> {
  const { log } = opts;
  const runtime = new Runtime({ workers: 1 });
  try {
    log('ceiling: ONNX Runtime MatMul, float32');
    const ceilingGflops = await ceiling(runtime, opts.ceilingSize, 5, log);

    log(`train step: reference stack ${JSON.stringify(STACK)}`);
    const cfg = stackConfig();
    const program = {
      dtype: 'float32' as const,
      build(graph: Graph, param: (name: string, shape: number[]) => Tensor) {
        const ids = graph.input('input_ids', 'int64', ['B', 'T']);
        const labels = graph.input('labels', 'int64', ['B', 'T']);
        const shapes = new Map(llamaParams(cfg).map((p) => [p.name, p.shape]));
        const cache = new Map<string, Tensor>();
        const w = (name: string) => {
          if (!cache.has(name)) cache.set(name, param(name, shapes.get(name)!));
          return cache.get(name)!;
        };
        const { logits } = llamaForward(cfg, w, { inputIds: ids });
        return T.neg(T.mean(tokenLogprobs(logits, labels)));
      },
    };
    const spec: TrainStepSpec = { optimizer: { kind: 'adamw', weightDecay: 0 }, gradClip: 0 };
    const schedule: ScheduleSpec = { kind: 'constant', peakLr: 1e-3, warmupSteps: 0, totalSteps: 1 };
    const state = await TrainingState.create(runtime, program, spec, schedule, initLlamaWeights(cfg, 0));
    const t = state.timings;
    log(
      `  ready in ${(t.traceMs + t.compileMs + t.sessionMs).toFixed(0)} ms (trace ${t.traceMs.toFixed(0)}, compile ${t.compileMs.toFixed(0)}, session ${t.sessionMs.toFixed(0)})`,
    );

    // Count the work of the very graph that runs: rebuild it (tracing is cheap) and count.
    const flops = countTrainFlops(program, spec);
    const { ids, labels } = stackBatch();
    const dims = [STACK.batch, STACK.seq];
    const batch = {
      input_ids: { dtype: 'int64' as const, dims, data: BigInt64Array.from(ids, BigInt) },
      labels: { dtype: 'int64' as const, dims, data: BigInt64Array.from(labels, BigInt) },
    };
    // Two warm-up steps: the first sizes ONNX Runtime's arena, the second still pays for it.
    const first = await state.step(batch);
    await state.step(batch);
    let last = first;
    const stepMs = await timed('duel step', opts.steps, log, async () => {
      last = await state.step(batch);
    });
    await state.dispose();
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
      ceiling_gflops: ceilingGflops,
      train_step_ms: stepMs,
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
    };

    if (opts.peer) {
      log('peer: TensorFlow.js (wasm backend), same stack, own process');
      const script = fileURLToPath(new URL('./tfjs-peer.js', import.meta.url));
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

/** Counts the work of the training-step graph itself: forward, backward and the AdamW update. */
function countTrainFlops(
  program: { build(g: Graph, p: (n: string, s: number[]) => Tensor): Tensor },
  spec: TrainStepSpec,
) {
  const g = new Graph();
  const params = new Map<string, Tensor>();
  const loss = program.build(g, (name, shape) => {
    const p = g.input(name, 'float32', shape);
    params.set(name, p);
    return p;
  });
  return countFlops(g, buildTrainStep(g, loss, params, spec).outputs, { B: STACK.batch, T: STACK.seq });
}
