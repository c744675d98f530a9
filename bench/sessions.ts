/**
 * `duel bench sessions`: what a client-driven training session costs over gRPC, against
 * `duel serve trainer` as a process (loopback gRPC, a file artifact store, the session journal on a
 * real nats-server when one is installed, else the in-process bus):
 *  - the per-step overhead: ForwardBackward + OptimStep on the 21.9M-parameter model (or another
 *    DECODE_MODELS shape) through the
 *    API against the same step run in this process (same runtime settings as the trainer's), with
 *    no snapshot in the timed steps; then the amortised cost of a snapshot every 10 steps;
 *  - calls/s of small calls (a one-token ForwardBackward on the testbed-sized model);
 *  - Sample in the trainer, right after a step (its decoder follows the new weights) and again;
 *  - resume after SIGKILL: the restart until the trainer listens, and the first call of the
 *    interrupted session (restore from the last snapshot + replay + the call);
 *  - sessions per trainer: its resident memory with n LoRA sessions (rank 8, every linear layer) on
 *    one base — without ONNX Runtime's memory arena (the trainer's default for sessions) and with
 *    it — and with full-weight sessions, so memory per session and how many fit.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { TrainingSession } from '../src/algorithms/session.js';
import { ServiceProcess } from '../src/client/local-cluster.js';
import { type Datum, TrainingClient, type TrainingSessionHandle } from '../src/client/training.js';
import { Runtime } from '../src/engine/index.js';
import type { ModelRef } from '../src/gen/duel/v1/common.js';
import type { LlamaConfig } from '../src/models/llama/config.js';
import { initLlamaWeights } from '../src/models/llama/weights.js';
import { ALL_LINEAR } from '../src/models/lora/config.js';
import { saveModelDir } from '../src/models/model-dir.js';
import { FileArtifactStore } from '../src/platform/artifacts.js';
import { MEMORY_BUS_URL } from '../src/platform/bus.js';
import { findNatsServer, NatsServer } from '../src/platform/nats-server.js';
import { DECODE_MODELS } from './decode.js';
import { median, rssMb, timeRuns } from './measure.js';

export interface SessionsBenchOptions {
  /** A DECODE_MODELS name (default 25M, the 21.9M-parameter model). */
  model?: string;
  /** Timed steps per measurement. */
  steps: number;
  /** Sequences per step and tokens per sequence (prompt and completion, half each). */
  batch: number;
  tokens: number;
  /** LoRA session counts to measure memory at. */
  loraSessions: number[];
  log: (line: string) => void;
}

export interface SessionsBenchResult {
  model: string;
  params: number;
  batch: number;
  tokens: number;
  journal: 'nats' | 'memory';
  /** The step in this process as the trainer runs sessions (no memory arena), and with the arena. */
  in_process_step_ms: number;
  in_process_arena_step_ms: number;
  grpc_step_ms: number;
  overhead_fraction: number;
  /** Mean step with a snapshot every 10 steps, and the snapshot's own cost. */
  snapshot_every_10_step_ms: number;
  snapshot_ms: number;
  snapshot_bytes: number;
  small_calls_per_s: number;
  /** Sample (8 prompts × 4, 32 new tokens) right after a step and again, full weights and LoRA r 8. */
  sample: Record<'full' | 'lora', { after_step_ms: number; again_ms: number }>;
  restart_ms: number;
  resumed_first_call_ms: number;
  restore_log_ms: number;
  replayed_calls: number;
  memory: { kind: string; sessions: number; trainer_rss_mb: number }[];
  lora_mb_per_session: number;
  lora_arena_mb_per_session: number;
  full_mb_per_session: number;
  lora_sessions_fit: number;
  machine_mb: number;
}

/** `batch` sequences of `tokens` ids, half prompt and half completion, the same every call. */
export function batchOf(cfg: LlamaConfig, batch: number, tokens: number): Datum[] {
  const id = (r: number, i: number) => 2 + ((r * 131 + i * 17) % (cfg.vocabSize - 2));
  const half = Math.floor(tokens / 2);
  return Array.from({ length: batch }, (_, r) => ({
    promptIds: Array.from({ length: half }, (_, i) => id(r, i)),
    completionIds: Array.from({ length: tokens - half }, (_, i) => id(r, half + i)),
  }));
}

const OPTIMIZER = { name: 'adamw', learningRate: 1e-4, gradClip: 1 };

/**
 * What the session benches stand on: a scratch root, a nats-server for the journal when one is
 * installed, a file artifact store, and a random `model` (a DECODE_MODELS name) put in it as `base`.
 */
export async function sessionBenchStage(model: string, prefix: string) {
  const cfg = DECODE_MODELS[model];
  if (!cfg) throw new Error(`unknown model '${model}' (known: ${Object.keys(DECODE_MODELS).join(', ')})`);
  const root = mkdtempSync(join(tmpdir(), prefix));
  const nats = findNatsServer() ? await NatsServer.start({ storeDir: join(root, 'nats') }) : undefined;
  const store = new FileArtifactStore(join(root, 'store'));
  const weights = initLlamaWeights(cfg, 1);
  const params = Object.values(weights).reduce((n, t) => n + t.data.length, 0);
  saveModelDir(join(root, 'base'), cfg, weights);
  const base: ModelRef = {
    artifact: store.put(join(root, 'base'), 'base'),
    adapter: undefined,
    name: 'base',
  };
  return { cfg, root, nats, store, weights, params, base };
}

export async function runSessionsBench(o: SessionsBenchOptions): Promise<SessionsBenchResult> {
  const model = o.model ?? '25M';
  const { cfg, root, nats, store, weights, params, base } = await sessionBenchStage(
    model,
    'duel-bench-sessions-',
  );
  const small = DECODE_MODELS.testbed!;
  saveModelDir(join(root, 'small'), small, initLlamaWeights(small, 1));
  const smallBase: ModelRef = {
    artifact: store.put(join(root, 'small'), 'small'),
    adapter: undefined,
    name: 'small',
  };
  const data = batchOf(cfg, o.batch, o.tokens);
  const procs: ServiceProcess[] = [];
  const trainer = async (snapshotEvery: number, arena = false) => {
    const p = new ServiceProcess(
      'trainer',
      `trainer-${procs.length}`,
      {
        DUEL_NATS_URL: nats?.url ?? MEMORY_BUS_URL,
        DUEL_ARTIFACTS_ROOT: store.root,
        DUEL_TRAINER_SESSIONS_SNAPSHOT_EVERY: String(snapshotEvery),
        // One name across restarts, as a container restarted in its pod keeps its pod's name: the
        // restarted trainer takes its sessions back at once instead of waiting out its old lease.
        DUEL_TRAINER_ID: 'bench-trainer',
        DUEL_TRAINER_SESSIONS_LOW_MEMORY: String(!arena),
        DUEL_LOG_LEVEL: 'info',
      },
      root,
    );
    procs.push(p);
    await p.start();
    return p;
  };
  const step = (s: TrainingSessionHandle) => async () => {
    await s.forwardBackward('cross_entropy', data);
    await s.optimStep();
  };
  try {
    // The same step in this process, on the runtime settings `duel serve trainer` uses here: with
    // the trainer's default for sessions (no memory arena) and with ONNX Runtime's arena.
    const inProcess: Record<'lowMemory' | 'arena', number[]> = { lowMemory: [], arena: [] };
    for (const kind of ['lowMemory', 'arena'] as const) {
      const runtime = new Runtime({ workers: 2, intraOpThreads: 1 });
      try {
        const s = await TrainingSession.create(runtime, {
          config: cfg,
          weights,
          optimizer: { kind: 'adamw', weightDecay: 0 },
          gradClip: 1,
          lr: 1e-4,
          lowMemory: kind === 'lowMemory',
        });
        const inProcessStep = async () => {
          await s.forwardBackward('cross_entropy', data);
          await s.optimStep();
        };
        await inProcessStep();
        inProcess[kind] = await timeRuns(o.steps, inProcessStep);
        await s.close();
      } finally {
        await runtime.close();
      }
      o.log(`in process (${kind}): ${median(inProcess[kind]).toFixed(0)} ms per step (median of ${o.steps})`);
    }

    // Through the API, no snapshot among the timed steps.
    let t = await trainer(1_000_000);
    let client = new TrainingClient(t.address);
    const s = await client.createSession({ base, optimizer: OPTIMIZER });
    await step(s)();
    const grpc = await timeRuns(o.steps, step(s));
    o.log(`over gRPC: ${median(grpc).toFixed(0)} ms per step (median of ${o.steps})`);

    const tiny = await client.createSession({ base: smallBase, optimizer: OPTIMIZER });
    const one = [{ promptIds: [2], completionIds: [3] }];
    await tiny.forwardBackward('cross_entropy', one);
    const calls = 200;
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) await tiny.forwardBackward('cross_entropy', one);
    const callsPerS = calls / ((performance.now() - t0) / 1000);
    o.log(`small calls: ${callsPerS.toFixed(0)} ForwardBackward calls/s`);

    // Sample in the trainer: right after a step (the decoder follows the new weights: a full-weight
    // session compiles one with them, a LoRA session sets its adapter into its base's), then again.
    const prompts = data.slice(0, 8).map((d) => d.promptIds.slice(0, 16));
    const sampling = { numSamples: 4, maxNewTokens: 32, seed: 1 };
    const sampleTimes = async (x: TrainingSessionHandle) => {
      await x.sample(prompts, sampling); // a LoRA session's first Sample compiles its base's decoder
      await step(x)();
      const afterStep = await timeRuns(1, () => x.sample(prompts, sampling));
      const again = await timeRuns(3, () => x.sample(prompts, sampling));
      return { after_step_ms: afterStep[0]!, again_ms: median(again) };
    };
    const sample = {
      full: await sampleTimes(s),
      lora: await sampleTimes(
        await client.createSession({
          base,
          optimizer: OPTIMIZER,
          lora: { rank: 8, alpha: 16, targets: [...ALL_LINEAR], rslora: false },
        }),
      ),
    };
    o.log(
      `Sample (${prompts.length} prompts × ${sampling.numSamples}, ${sampling.maxNewTokens} tokens): full weights ${sample.full.after_step_ms.toFixed(0)} ms after a step, ${sample.full.again_ms.toFixed(0)} ms again; LoRA ${sample.lora.after_step_ms.toFixed(0)} / ${sample.lora.again_ms.toFixed(0)} ms`,
    );
    client.close();
    await t.stop();

    // A snapshot every 10 steps: 10 timed steps hold exactly one.
    t = await trainer(10);
    client = new TrainingClient(t.address);
    const d = await client.createSession({ base, optimizer: OPTIMIZER, clientToken: 'durable' });
    await step(d)();
    // Optimizer steps 2…11: the snapshot comes with step 10.
    const withSnapshots = await timeRuns(10, step(d));
    const snapshotMs = Math.max(...withSnapshots) - median(withSnapshots);
    o.log(
      `a snapshot every 10 steps: ${(withSnapshots.reduce((a, b) => a + b, 0) / 10).toFixed(0)} ms per step`,
    );
    // Four more steps (step 15: 10 calls after the snapshot) to replay, then SIGKILL and restart on the same port.
    for (let i = 0; i < 4; i++) await step(d)();
    await t.stop('SIGKILL');
    const r0 = performance.now();
    await t.start();
    const restartMs = performance.now() - r0;
    const c0 = performance.now();
    await d.forwardBackward('cross_entropy', data);
    const resumedMs = performance.now() - c0;
    const restored = readFileSync(join(root, `${t.name}.log`), 'utf8')
      .split('\n')
      .filter((l) => l.includes('training session restored'))
      .map((l) => JSON.parse(l) as { ms: number; replayed: number })
      .at(-1);
    o.log(`resume after SIGKILL: restart ${restartMs.toFixed(0)} ms, first call ${resumedMs.toFixed(0)} ms`);
    await d.close();
    client.close();
    await t.stop();

    // Resident memory with n sessions, without (the default) and with ONNX Runtime's memory arena,
    // each read once the trainer has had a second without calls, as between a client's calls: an
    // idle worker hands freed pages back (engine/runtime/return-memory.ts) 250 ms after its last run.
    const memory: SessionsBenchResult['memory'] = [];
    const settledRss = async (pid: number | undefined) => {
      await new Promise((r) => setTimeout(r, 1000));
      return rssMb(pid);
    };
    const lora = { rank: 8, alpha: 16, targets: [...ALL_LINEAR], rslora: false };
    for (const arena of [false, true]) {
      t = await trainer(1_000_000, arena);
      client = new TrainingClient(t.address);
      if (!arena) memory.push({ kind: 'none', sessions: 0, trainer_rss_mb: await settledRss(t.child.pid) });
      const kind = arena ? 'lora r8, arena' : 'lora r8';
      const open: TrainingSessionHandle[] = [];
      for (const n of o.loraSessions) {
        while (open.length < n) {
          const x = await client.createSession({ base, optimizer: OPTIMIZER, lora, seed: open.length });
          await step(x)();
          open.push(x);
        }
        memory.push({ kind, sessions: n, trainer_rss_mb: await settledRss(t.child.pid) });
        o.log(`${n} ${kind} sessions: trainer ${memory.at(-1)!.trainer_rss_mb.toFixed(0)} MB`);
      }
      client.close();
      await t.stop();
    }
    t = await trainer(1_000_000);
    client = new TrainingClient(t.address);
    for (let n = 1; n <= 2; n++) {
      await step(await client.createSession({ base, optimizer: OPTIMIZER }))();
      memory.push({ kind: 'full', sessions: n, trainer_rss_mb: await settledRss(t.child.pid) });
      o.log(`${n} full-weight sessions: trainer ${memory.at(-1)!.trainer_rss_mb.toFixed(0)} MB`);
    }
    client.close();
    await t.stop();

    const perSession = (kind: string) => {
      const rows = memory.filter((m) => m.kind === kind);
      const [a, b] = [rows[0]!, rows.at(-1)!];
      return b.sessions > a.sessions
        ? (b.trainer_rss_mb - a.trainer_rss_mb) / (b.sessions - a.sessions)
        : Number.NaN;
    };
    const loraPer = perSession('lora r8');
    const fullPer = perSession('full');
    const first = memory.find((m) => m.kind === 'lora r8')!;
    const machineMb = totalmem() / 2 ** 20;
    const stateBytes = params * 4 * 4; // weights, AdamW's two slots, the accumulator
    return {
      model,
      params,
      batch: o.batch,
      tokens: o.tokens,
      journal: nats ? 'nats' : 'memory',
      in_process_step_ms: median(inProcess.lowMemory),
      in_process_arena_step_ms: median(inProcess.arena),
      grpc_step_ms: median(grpc),
      overhead_fraction: (median(grpc) - median(inProcess.lowMemory)) / median(inProcess.lowMemory),
      snapshot_every_10_step_ms: withSnapshots.reduce((a, b) => a + b, 0) / 10,
      snapshot_ms: snapshotMs,
      snapshot_bytes: stateBytes,
      small_calls_per_s: callsPerS,
      sample,
      restart_ms: restartMs,
      resumed_first_call_ms: resumedMs,
      restore_log_ms: restored?.ms ?? Number.NaN,
      replayed_calls: restored?.replayed ?? Number.NaN,
      memory,
      lora_mb_per_session: loraPer,
      lora_arena_mb_per_session: perSession('lora r8, arena'),
      full_mb_per_session: fullPer,
      lora_sessions_fit: Math.floor((machineMb - first.trainer_rss_mb) / loraPer),
      machine_mb: machineMb,
    };
  } finally {
    for (const p of procs) await p.stop();
    await nats?.stop();
    rmSync(root, { recursive: true, force: true });
  }
}
