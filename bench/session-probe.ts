/**
 * `duel bench session-probe`: training sessions in this process, stage by stage, for what
 * `duel bench sessions` measures only from outside: the resident memory of a full-weight session
 * after each stage (and after 10 steps against its state's bytes; `--no-in-place` for steps that
 * write a fresh state each time, as duel did before), the parts of one snapshot, what is left once
 * the session is closed, and n LoRA sessions on one shared base (memory and step time, with or
 * without ONNX Runtime's memory arena). It loads weights as the trainer does (handed over, not
 * copied; a snapshot's buffers freed once written). Run it under glibc settings
 * (`MALLOC_MMAP_THRESHOLD_=131072 …`) to see what the allocator keeps, and with DUEL_MALLOC_TRIM=0
 * for the peer of idle workers giving freed pages back. Last, a LoRA training round as a run's
 * trainer takes it (trainRound): how much its peak adds, in copies of the base.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeSessionState } from '../services/trainer/session-state.js';
import { TrainingSession, type TrainingSessionOptions } from '../src/algorithms/session.js';
import { trainRound } from '../src/algorithms/train-round.js';
import { freeHostTensors, Runtime, SharedTensors } from '../src/engine/index.js';
import { ModelRef, OptimizerConfig } from '../src/gen/duel/v1/common.js';
import type { LlamaConfig } from '../src/models/llama/config.js';
import type { HostTensor } from '../src/models/llama/weights.js';
import { initLlamaWeights, llamaParams } from '../src/models/llama/weights.js';
import { initAdapter } from '../src/models/lora/adapter.js';
import { ALL_LINEAR, type LoraConfig } from '../src/models/lora/config.js';
import { FileArtifactStore } from '../src/platform/artifacts.js';
import { DECODE_MODELS } from './decode.js';
import { median, rssMb, timeRuns } from './measure.js';

const LORA_R8: LoraConfig = { rank: 8, alpha: 16, targets: [...ALL_LINEAR], rslora: false, dropout: 0 };

export interface SessionProbeOptions {
  model: string;
  /** LoRA sessions on one base. */
  loraSessions: number;
  /** Keep ONNX Runtime's memory arena (sessions turn it off by default in the trainer). */
  arena: boolean;
  /** Steps write the state into its own buffers (the default); false: fresh buffers every step. */
  inPlace: boolean;
  /** Gradient checkpointing (TrainingSessionOptions.checkpointing). */
  checkpointing: boolean;
  log: (line: string) => void;
}

function modelConfig(model: string): LlamaConfig {
  const cfg = DECODE_MODELS[model];
  if (!cfg) throw new Error(`unknown model '${model}' (known: ${Object.keys(DECODE_MODELS).join(', ')})`);
  return cfg;
}

/** Only the LoRA round, in a process that has run nothing else: its peak is then its own. */
export async function runRoundProbe(o: { model: string; log: (line: string) => void }) {
  const cfg = modelConfig(o.model);
  const runtime = new Runtime({ workers: 2, intraOpThreads: 1 });
  try {
    return {
      model: o.model,
      lora_round: await loraRound(runtime, cfg, initLlamaWeights(cfg, 1), LORA_R8, o.log),
    };
  } finally {
    await runtime.close();
  }
}

export async function runSessionProbe(o: SessionProbeOptions) {
  const cfg = modelConfig(o.model);
  const runtime = new Runtime({ workers: 2, intraOpThreads: 1 });
  const root = mkdtempSync(join(tmpdir(), 'duel-probe-'));
  const id = (r: number, i: number) => 2 + ((r * 131 + i * 17) % (cfg.vocabSize - 2));
  const data = Array.from({ length: 8 }, (_, r) => ({
    promptIds: Array.from({ length: 64 }, (_, i) => id(r, i)),
    completionIds: Array.from({ length: 64 }, (_, i) => id(r, 64 + i)),
  }));
  const common: Omit<TrainingSessionOptions, 'weights'> = {
    config: cfg,
    optimizer: { kind: 'adamw', weightDecay: 0 },
    gradClip: 1,
    lr: 1e-4,
    lowMemory: !o.arena,
    inPlace: o.inPlace,
    checkpointing: o.checkpointing,
  };
  const stage = (rows: { stage: string; rss_mb: number }[], name: string) => {
    rows.push({ stage: name, rss_mb: rssMb() });
    o.log(`${name}: ${rows.at(-1)!.rss_mb.toFixed(0)} MB`);
  };
  try {
    // A full-weight session, stage by stage.
    const full: { stage: string; rss_mb: number }[] = [];
    // As in the trainer, the session keeps no host copy of its weights: π_ref is read again when a
    // loss first needs it. So this process holds them only until the session has them.
    const fresh = () => initLlamaWeights(cfg, 1);
    const parameters = llamaParams(cfg).reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
    const s = await (async () => {
      const weights = fresh();
      stage(full, 'weights on the host');
      return TrainingSession.create(runtime, {
        ...common,
        weights,
        handOver: true,
        reference: async () => fresh(),
      });
    })();
    stage(full, 'session created');
    await s.forwardBackward('cross_entropy', data);
    stage(full, 'first forwardBackward');
    await s.optimStep();
    stage(full, 'first optimStep');
    await s.forwardBackward('cross_entropy', data);
    await s.optimStep();
    stage(full, 'second step');
    const steps = await timeRuns(8, async () => {
      await s.forwardBackward('cross_entropy', data);
      await s.optimStep();
    });
    stage(full, 'after 10 steps');
    // A worker that runs nothing for a moment gives its freed pages back (engine/runtime/return-memory.ts).
    await new Promise((r) => setTimeout(r, 1000));
    stage(full, 'after 10 steps and 1 s idle');
    // AdamW: weights, two slots and the gradient accumulators, float32.
    const stateBytes = parameters * 4 * 4;
    const after10 = full.at(-2)!.rss_mb;
    const idle = full.at(-1)!.rss_mb;
    o.log(
      `state ${(stateBytes / 2 ** 20).toFixed(0)} MiB; after 10 steps ${(after10 / (stateBytes / 2 ** 20)).toFixed(2)}× it, ${(idle / (stateBytes / 2 ** 20)).toFixed(2)}× once idle; steps 3–10: median ${median(steps).toFixed(0)} ms`,
    );

    // A snapshot's parts, after a warm-up one.
    const store = new FileArtifactStore(join(root, 'store'));
    const base = ModelRef.fromPartial({ name: 'base' });
    const snapshots: { read_ms: number; write_ms: number; publish_ms: number }[] = [];
    for (let i = 0; i < 3; i++) {
      let t = performance.now();
      const snapshot = await s.snapshot();
      const read = performance.now() - t;
      t = performance.now();
      const dir = join(store.scratch(), 'state');
      writeSessionState(dir, {
        base,
        optimizer: OptimizerConfig.fromPartial({}),
        seed: 0,
        lora: undefined,
        snapshot,
      });
      const write = performance.now() - t;
      // As the trainer does once a snapshot is written (services/trainer/sessions.ts).
      freeHostTensors(Object.values(snapshot.tensors));
      t = performance.now();
      store.put(dir, `snapshot-${i}`, { move: true });
      snapshots.push({ read_ms: read, write_ms: write, publish_ms: performance.now() - t });
      store.remove(`snapshot-${i}`);
      o.log(
        `snapshot ${i + 1}: read back ${read.toFixed(0)} ms, written ${write.toFixed(0)} ms, hashed and moved in ${snapshots.at(-1)!.publish_ms.toFixed(0)} ms`,
      );
    }
    await s.close();
    await new Promise((r) => setTimeout(r, 1000));
    stage(full, 'session closed, 1 s idle');

    // LoRA sessions on one shared base: memory after each session's first step, and its step time.
    const shared = await SharedTensors.create(runtime, fresh(), { handOver: true });
    const loraRows: { sessions: number; rss_mb: number; step_ms: number }[] = [];
    const open: TrainingSession[] = [];
    for (let n = 1; n <= o.loraSessions; n++) {
      const x = await TrainingSession.create(runtime, {
        ...common,
        weights: initAdapter(cfg, LORA_R8, n).tensors,
        handOver: true,
        lora: { config: LORA_R8, base: shared },
      });
      open.push(x);
      const ms = await timeRuns(2, async () => {
        await x.forwardBackward('cross_entropy', data);
        await x.optimStep();
      });
      loraRows.push({ sessions: n, rss_mb: rssMb(), step_ms: median(ms) });
      o.log(
        `${n} LoRA r8 sessions: ${loraRows.at(-1)!.rss_mb.toFixed(0)} MB, step ${loraRows.at(-1)!.step_ms.toFixed(0)} ms`,
      );
    }
    for (const x of open) await x.close();
    await shared.dispose();

    const round = await loraRound(runtime, cfg, fresh(), LORA_R8, o.log);
    return {
      model: o.model,
      arena: o.arena,
      in_place: o.inPlace,
      gradient_checkpointing: o.checkpointing,
      state_mb: stateBytes / 2 ** 20,
      rss_after_10_steps_vs_state: after10 / (stateBytes / 2 ** 20),
      rss_idle_vs_state: idle / (stateBytes / 2 ** 20),
      step_ms: median(steps),
      full,
      snapshots,
      lora: loraRows,
      lora_round: round,
    };
  } finally {
    await runtime.close();
    rmSync(root, { recursive: true, force: true });
  }
}

/**
 * One SPPO round of a LoRA r8 adapter on `weights` (8 prompts × 4 completions of 64 tokens, 2
 * AdamW steps, then the round's figures, which sample): the resident memory it adds at its peak
 * (sampled every 10 ms), against the base's bytes. π_θ, π_t and π_ref all stand on the base.
 */
async function loraRound(
  runtime: Runtime,
  cfg: LlamaConfig,
  weights: Record<string, HostTensor>,
  lora: LoraConfig,
  log: (line: string) => void,
) {
  const baseMb = (Object.values(weights).reduce((n, t) => n + t.data.length, 0) * 4) / 2 ** 20;
  await new Promise((r) => setTimeout(r, 1000));
  const before = rssMb();
  let peak = before;
  const sampler = setInterval(() => {
    peak = Math.max(peak, rssMb());
  }, 10);
  const id = (r: number, i: number) => 2 + ((r * 977 + i * 31) % (cfg.vocabSize - 2));
  const records = Array.from({ length: 8 }, (_, r) => ({
    prompt_ids: Array.from({ length: 32 }, (_, i) => id(r, i)),
    completion_ids: Array.from({ length: 4 }, (_, c) =>
      Array.from({ length: 64 }, (_, i) => id(r, 100 * c + i)),
    ),
    prefs: Array.from({ length: 4 }, (_, a) =>
      Array.from({ length: 4 }, (_, b) => (a === b ? 0.5 : a < b ? 0.7 : 0.3)),
    ),
  }));
  const t0 = performance.now();
  try {
    await trainRound(runtime, {
      algo: 'sppo',
      hparams: {},
      config: cfg,
      weights,
      adapter: initAdapter(cfg, lora, 7),
      records,
      optimizer: { kind: 'adamw', weightDecay: 0 },
      lr: 1e-4,
      steps: 2,
      batchSize: 4,
      gradClip: 1,
      seed: 0,
    });
  } finally {
    clearInterval(sampler);
  }
  const row = {
    base_mb: baseMb,
    rss_before_mb: before,
    peak_added_mb: peak - before,
    peak_added_vs_base: (peak - before) / baseMb,
    seconds: (performance.now() - t0) / 1000,
  };
  log(
    `a LoRA r8 SPPO round: its peak adds ${row.peak_added_mb.toFixed(0)} MB (${row.peak_added_vs_base.toFixed(2)}× the ${baseMb.toFixed(0)} MiB base), ${row.seconds.toFixed(1)} s`,
  );
  return row;
}
