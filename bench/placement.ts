/**
 * `duel bench placement`: where ONNX Runtime ran each node of duel's graphs. A provider without a
 * kernel for a node (the WebGPU one has none for some ops) places it on the CPU without a word and
 * copies its inputs and outputs across: this reads the nodes, their kernel time and those copies
 * from ONNX Runtime's own profile (`enableProfiling`) of a training step, a decoding step, the
 * judge's K×K comparison and the completion log-probs.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Provider, Runtime, TrainingState } from '../src/engine/index.js';
import { generate } from '../src/models/generate.js';
import { parseJudgeConfig } from '../src/models/judge/config.js';
import { initJudgeWeights } from '../src/models/judge/model.js';
import { JudgeRunner } from '../src/models/judge/runner.js';
import { toHfConfig } from '../src/models/llama/config.js';
import { LogprobRunner } from '../src/models/llama/logprob-runner.js';
import { DecoderRunner } from '../src/models/llama/runner.js';
import { initLlamaWeights } from '../src/models/llama/weights.js';
import { STACKS, stackConfig, stackFeeds, stackProgram } from './reference-stack.js';

export interface PlacementOptions {
  provider: Provider;
  /** A name of STACKS: the model every graph is built for. */
  model: string;
  /** Profiled runs of each graph. */
  runs: number;
  log: (line: string) => void;
}

export interface GraphPlacement {
  graph: string;
  /** Distinct nodes per provider (ONNX Runtime's names: CPUExecutionProvider, WebGpuExecutionProvider). */
  nodes: Record<string, number>;
  /** Kernel milliseconds per run, per provider. */
  ms_per_run: Record<string, number>;
  /** The op types placed on the CPU, with how many nodes of each. */
  cpu_ops: Record<string, number>;
  /**
   * The op types on any other provider, with how many nodes of each: on webgpu each is one
   * dispatch per run, and a step of many small ones is bound by their count (`dispatch` in
   * `duel bench engine`) rather than by arithmetic.
   */
  device_ops: Record<string, number>;
  /**
   * Host milliseconds per run that each op type's nodes on the other provider took, largest
   * first: on webgpu recording the dispatch, or waiting for the device where a node must (a copy
   * to the host). The device's own time per op is in `timeline`.
   */
  host_ms_by_device_op: Record<string, number>;
  /**
   * CPU nodes with a floating-point output: the computation itself rather than the int64 shape
   * and index arithmetic ONNX Runtime keeps on the CPU by design (WebGPU has no 64-bit integers).
   */
  cpu_float_nodes: string[];
  /** Copies ONNX Runtime inserted between providers: nodes, and bytes per run. */
  copies: { nodes: number; bytes_per_run: number };
  /**
   * A run from start to end, and the time the device spent in its kernels (webgpu: ONNX Runtime's
   * GPU timestamps per program), both in ms, the mean over the runs after the first (which
   * compiles shaders; for decoding, the prefill). Busy far below the run means the host bounds the
   * step (dispatch, waits), not the device. Profiling itself slows the host side.
   */
  timeline?: { run_ms: number; device_busy_ms: number; device_ms_by_op: Record<string, number> };
}

export interface PlacementResult {
  provider: Provider;
  model: string;
  graphs: GraphPlacement[];
}

interface ProfileEvent {
  cat: string;
  name: string;
  dur: number;
  ts: number;
  args?: {
    op_name?: string;
    provider?: string;
    output_size?: string;
    output_type_shape?: Record<string, number[]>[];
  };
}

const COPY = new Set(['MemcpyToHost', 'MemcpyFromHost']);

/**
 * Each run after the first, per profile (one a session; timestamps count from its own start): its
 * length, and the device kernel time ('Api' events) inside it.
 */
export function readTimeline(profiles: ProfileEvent[][]): GraphPlacement['timeline'] {
  let [runs, runUs, busyUs] = [0, 0, 0];
  const byOp: Record<string, number> = {};
  for (const events of profiles) {
    const kernels = events.filter((e) => e.cat === 'Api');
    for (const run of events.filter((e) => e.cat === 'Session' && e.name === 'model_run').slice(1)) {
      runs++;
      runUs += run.dur;
      for (const k of kernels)
        if (k.ts >= run.ts && k.ts < run.ts + run.dur) {
          busyUs += k.dur;
          // Named `<node>&<op>&<program>`.
          const op = k.name.split('&')[1] ?? k.name;
          byOp[op] = (byOp[op] ?? 0) + k.dur;
        }
    }
  }
  if (!runs || !busyUs) return undefined;
  const top = Object.entries(byOp)
    .sort((x, y) => y[1] - x[1])
    .slice(0, 8)
    .map(([op, us]) => [op, us / 1000 / runs]);
  return {
    run_ms: runUs / 1000 / runs,
    device_busy_ms: busyUs / 1000 / runs,
    device_ms_by_op: Object.fromEntries(top),
  };
}

/** The profiles ONNX Runtime wrote under `dir`, summed over `runs` runs. */
export function readPlacement(graph: string, dir: string, runs: number): GraphPlacement {
  // One profile a session; each read once.
  const profiles = readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as ProfileEvent[]);
  const events = profiles.flat().filter((e) => e.cat === 'Node' && e.args?.provider);
  const nodes = new Map<string, { provider: string; op: string; float: boolean }>();
  const ms: Record<string, number> = {};
  const opMs: Record<string, number> = {};
  let copyBytes = 0;
  for (const e of events) {
    const provider = e.args!.provider!;
    const op = e.args!.op_name ?? '?';
    const float = (e.args!.output_type_shape ?? []).some((o) =>
      Object.keys(o).some((t) => t.startsWith('float')),
    );
    nodes.set(`${e.name}@${provider}`, { provider, op, float });
    ms[provider] = (ms[provider] ?? 0) + e.dur / 1000 / runs;
    if (provider !== 'CPUExecutionProvider') opMs[op] = (opMs[op] ?? 0) + e.dur / 1000 / runs;
    if (COPY.has(op)) copyBytes += Number(e.args!.output_size ?? 0);
  }
  const count: Record<string, number> = {};
  const cpuOps: Record<string, number> = {};
  const deviceOps: Record<string, number> = {};
  const cpuFloat: string[] = [];
  let copies = 0;
  for (const [name, { provider, op, float }] of nodes) {
    count[provider] = (count[provider] ?? 0) + 1;
    if (provider === 'CPUExecutionProvider') {
      cpuOps[op] = (cpuOps[op] ?? 0) + 1;
      if (float) cpuFloat.push(name.slice(0, name.indexOf('_kernel_time')));
    } else deviceOps[op] = (deviceOps[op] ?? 0) + 1;
    if (COPY.has(op)) copies++;
  }
  const timeline = readTimeline(profiles);
  return {
    ...(timeline ? { timeline } : {}),
    graph,
    nodes: count,
    ms_per_run: ms,
    cpu_ops: cpuOps,
    device_ops: deviceOps,
    host_ms_by_device_op: Object.fromEntries(Object.entries(opMs).sort((a, b) => b[1] - a[1])),
    cpu_float_nodes: cpuFloat,
    copies: { nodes: copies, bytes_per_run: copyBytes / runs },
  };
}

/** Runs `work` on a profiling runtime of its own and reads what ONNX Runtime recorded. */
async function profile(
  graph: string,
  o: PlacementOptions,
  work: (rt: Runtime) => Promise<void>,
): Promise<GraphPlacement> {
  const dir = mkdtempSync(join(tmpdir(), 'duel-placement-'));
  const rt = new Runtime({ workers: 1, provider: o.provider, profilePrefix: join(dir, 'profile') });
  try {
    await work(rt);
    await rt.endProfiling();
    const p = readPlacement(graph, dir, o.runs);
    const cpu = Object.entries(p.cpu_ops)
      .map(([op, n]) => `${op}×${n}`)
      .join(' ');
    o.log(`${graph}: ${JSON.stringify(p.nodes)}; on the CPU: ${cpu || 'nothing'}`);
    if (p.timeline)
      o.log(
        `  a run ${p.timeline.run_ms.toFixed(1)} ms, the device busy ${p.timeline.device_busy_ms.toFixed(1)} ms of it`,
      );
    return p;
  } finally {
    await rt.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function runPlacementBench(o: PlacementOptions): Promise<PlacementResult> {
  const shape = STACKS[o.model];
  if (!shape) throw new Error(`unknown model '${o.model}' (known: ${Object.keys(STACKS).join(', ')})`);
  const cfg = stackConfig(shape);
  const weights = initLlamaWeights(cfg, 0);
  const prompts = Array.from({ length: 4 }, (_, b) =>
    Array.from({ length: 8 }, (_, t) => 1 + ((b + t) % 50)),
  );
  const graphs: GraphPlacement[] = [];

  graphs.push(
    await profile('training step (AdamW)', o, async (rt) => {
      const state = await TrainingState.create(
        rt,
        stackProgram(cfg),
        { optimizer: { kind: 'adamw' }, gradClip: 1 },
        { kind: 'constant', peakLr: 1e-4, warmupSteps: 0, totalSteps: o.runs },
        weights,
      );
      const batch = stackFeeds(shape);
      for (let i = 0; i < o.runs; i++) await state.step(batch);
      await state.dispose();
    }),
  );
  graphs.push(
    await profile('decoding step (KV cache, in-graph draw)', o, async (rt) => {
      const runner = await DecoderRunner.create(rt, cfg, weights);
      // A prefill, then one step per new token: runs − 1 tokens.
      await generate(runner, prompts, {
        n: 1,
        maxNewTokens: o.runs,
        temperature: 1,
        topK: 0,
        topP: 1,
        seed: 0,
        eosIds: [],
        padId: 0,
      });
      await runner.release();
    }),
  );
  graphs.push(
    await profile('judge K×K comparison', o, async (rt) => {
      const jcfg = parseJudgeConfig({
        model_type: 'duel_pairrm',
        encoder: toHfConfig(cfg),
        source_token_id: shape.vocab - 3,
        candidate1_token_id: shape.vocab - 2,
        candidate2_token_id: shape.vocab - 1,
      });
      const judge = await JudgeRunner.create(rt, jcfg, initJudgeWeights(jcfg, 1));
      for (let i = 0; i < o.runs; i++) await judge.compare(prompts[0]!, prompts.slice(1));
      await judge.release();
    }),
  );
  graphs.push(
    await profile('completion log-probs', o, async (rt) => {
      const runner = await LogprobRunner.create(rt, cfg, weights);
      const records = prompts.map((p) => ({ promptIds: p.slice(0, 4), completionIds: p.slice(4) }));
      for (let i = 0; i < o.runs; i++) await runner.logprobs(records);
      await runner.release();
    }),
  );
  return { provider: o.provider, model: o.model, graphs };
}
