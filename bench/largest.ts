/**
 * `duel bench largest`: the largest Llama-shaped model this machine trains, with every weight and
 * with a LoRA r16 adapter (AdamW, 8 sequences of 512 tokens, a training session as the trainer
 * runs it: no arena, state updated in place). Each size runs in a child process of its own — one
 * ForwardBackward and one OptimStep, then its peak resident memory (VmHWM), up to the end of the
 * ForwardBackward and within the OptimStep (VmHWM restarted between them) — while this process
 * watches the machine's available memory and kills the child when less than `reserveMb` is left,
 * so a size that does not fit ends as "does not fit" rather than in the kernel's OOM killer. Sizes
 * go up a ladder of published shapes; a mode stops at its first size that does not fit. With
 * `--gradient-checkpointing` each layer's activations are recomputed in the backward pass.
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { TrainingSession, type TrainingSessionOptions } from '../src/algorithms/session.js';
import { Runtime, SharedTensors } from '../src/engine/index.js';
import { DuelError } from '../src/errors.js';
import { type LlamaConfig, parseLlamaConfig } from '../src/models/llama/config.js';
import { initLlamaWeights } from '../src/models/llama/weights.js';
import { initAdapter } from '../src/models/lora/adapter.js';
import { ALL_LINEAR } from '../src/models/lora/config.js';
import { duelBin } from '../src/platform/paths.js';
import { DECODE_MODELS } from './decode.js';

const llama = (c: Record<string, unknown>): LlamaConfig =>
  parseLlamaConfig({
    model_type: 'llama',
    rope_theta: 10000,
    eos_token_id: null,
    max_position_embeddings: 2048,
    ...c,
  });

/** Published shapes, smallest first (random weights: only the shape matters here). */
export const LADDER: Record<string, LlamaConfig> = {
  /** HuggingFaceTB/SmolLM-135M, as `bench decode` builds it */
  'smollm-135m': DECODE_MODELS['smollm-135m']!,
  /** HuggingFaceTB/SmolLM-360M */
  'smollm-360m': llama({
    vocab_size: 49152,
    hidden_size: 960,
    intermediate_size: 2560,
    num_hidden_layers: 32,
    num_attention_heads: 15,
    num_key_value_heads: 5,
    tie_word_embeddings: true,
  }),
  /** Qwen/Qwen2.5-0.5B's shape as a Llama (no attention biases) */
  'qwen2.5-0.5b': llama({
    vocab_size: 151936,
    hidden_size: 896,
    intermediate_size: 4864,
    num_hidden_layers: 24,
    num_attention_heads: 14,
    num_key_value_heads: 2,
    tie_word_embeddings: true,
  }),
  /** TinyLlama/TinyLlama-1.1B */
  'tinyllama-1.1b': llama({
    vocab_size: 32000,
    hidden_size: 2048,
    intermediate_size: 5632,
    num_hidden_layers: 22,
    num_attention_heads: 32,
    num_key_value_heads: 4,
    tie_word_embeddings: false,
  }),
  /** HuggingFaceTB/SmolLM-1.7B */
  'smollm-1.7b': llama({
    vocab_size: 49152,
    hidden_size: 2048,
    intermediate_size: 8192,
    num_hidden_layers: 24,
    num_attention_heads: 32,
    num_key_value_heads: 32,
    tie_word_embeddings: true,
  }),
};

export type Mode = 'full' | 'lora';

export interface SizeResult {
  model: string;
  mode: Mode;
  params: number;
  fits: boolean;
  /** Peak resident memory of the child, MiB (when it fits). */
  peak_rss_mb?: number;
  /** The peak up to the end of the ForwardBackward, and within the OptimStep, MiB. */
  peak_forward_backward_mb?: number;
  peak_optim_step_mb?: number;
  /** One ForwardBackward + OptimStep, ms (the first: it includes sizing every buffer). */
  step_ms?: number;
  /** Available memory when the watchdog stopped it, MiB (when it does not fit). */
  available_mb_at_kill?: number;
  seconds: number;
}

/** One size, in this process: the session, one step, and what the process peaked at. */
export async function trainOnce(
  model: string,
  mode: Mode,
  batch: number,
  seq: number,
  checkpointing: boolean,
) {
  const cfg = LADDER[model];
  if (!cfg) throw new Error(`unknown model '${model}' (known: ${Object.keys(LADDER).join(', ')})`);
  const runtime = new Runtime({ workers: 1, intraOpThreads: 0 });
  try {
    // As in the trainer, nothing here keeps a host copy of the weights once the session has them: a
    // full-weight session reads π_ref again if a loss asks, a LoRA base lives in SharedTensors.
    const fresh = () => initLlamaWeights(cfg, 1);
    const params = parameterCount(model);
    const half = seq / 2;
    const id = (r: number, i: number) => 2 + ((r * 131 + i * 17) % (cfg.vocabSize - 2));
    const data = Array.from({ length: batch }, (_, r) => ({
      promptIds: Array.from({ length: half }, (_, i) => id(r, i)),
      completionIds: Array.from({ length: half }, (_, i) => id(r, half + i)),
    }));
    const common: Omit<TrainingSessionOptions, 'weights'> = {
      config: cfg,
      optimizer: { kind: 'adamw', weightDecay: 0 },
      gradClip: 1,
      lr: 1e-5,
      lowMemory: true,
      checkpointing,
    };
    let session: TrainingSession;
    let shared: SharedTensors | undefined;
    if (mode === 'full')
      session = await TrainingSession.create(runtime, {
        ...common,
        weights: fresh(),
        handOver: true,
        reference: async () => fresh(),
      });
    else {
      shared = await SharedTensors.create(runtime, fresh(), { handOver: true });
      const lora = { rank: 16, alpha: 32, targets: [...ALL_LINEAR], rslora: false, dropout: 0 };
      session = await TrainingSession.create(runtime, {
        ...common,
        weights: initAdapter(cfg, lora, 1).tensors,
        handOver: true,
        lora: { config: lora, base: shared },
      });
    }
    const t0 = performance.now();
    await session.forwardBackward('cross_entropy', data);
    const peakForwardBackward = statusMb('VmHWM');
    // Linux restarts VmHWM from the present resident size on "5": the OptimStep's own peak.
    writeFileSync('/proc/self/clear_refs', '5');
    await session.optimStep();
    const peakOptimStep = statusMb('VmHWM');
    const stepMs = performance.now() - t0;
    await session.close();
    await shared?.dispose();
    return {
      params,
      step_ms: stepMs,
      peak_rss_mb: Math.max(peakForwardBackward, peakOptimStep),
      peak_forward_backward_mb: peakForwardBackward,
      peak_optim_step_mb: peakOptimStep,
    };
  } finally {
    await runtime.close();
  }
}

function statusMb(field: string, file = '/proc/self/status'): number {
  const line = readFileSync(file, 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${field}:`));
  return line ? Number(line.split(/\s+/)[1]) / 1024 : Number.NaN;
}

const availableMb = () => statusMb('MemAvailable', '/proc/meminfo');

export interface LargestOptions {
  models: string[];
  modes: Mode[];
  batch: number;
  seq: number;
  /** Kill a size when the machine has less than this available. */
  reserveMb: number;
  /** Train with gradient checkpointing (TrainingSessionOptions.checkpointing). */
  checkpointing: boolean;
  log: (line: string) => void;
}

/** Each mode up the ladder until a size does not fit. */
export async function runLargest(o: LargestOptions) {
  const unknown = o.models.filter((m) => !Object.hasOwn(LADDER, m));
  if (unknown.length)
    throw DuelError.invalidArgument([
      {
        field: '--models',
        description: `unknown ${unknown.join(', ')} (known: ${Object.keys(LADDER).join(', ')})`,
      },
    ]);
  const results: SizeResult[] = [];
  for (const mode of o.modes)
    for (const model of o.models) {
      const r = await oneSize(model, mode, o);
      results.push(r);
      o.log(
        r.fits
          ? `${mode} ${model} (${(r.params / 1e6).toFixed(0)}M): fits, peak ${r.peak_rss_mb!.toFixed(0)} MB (ForwardBackward ${r.peak_forward_backward_mb!.toFixed(0)}, OptimStep ${r.peak_optim_step_mb!.toFixed(0)}), step ${(r.step_ms! / 1000).toFixed(1)} s`
          : `${mode} ${model} (${(r.params / 1e6).toFixed(0)}M): does not fit (${r.available_mb_at_kill!.toFixed(0)} MB left when stopped)`,
      );
      if (!r.fits) break;
    }
  const largest = (mode: Mode) => results.filter((r) => r.mode === mode && r.fits).at(-1)?.model;
  return {
    batch: o.batch,
    seq: o.seq,
    gradient_checkpointing: o.checkpointing,
    memory_gb: statusMb('MemTotal', '/proc/meminfo') / 1024,
    largest_full: largest('full'),
    largest_lora: largest('lora'),
    sizes: results,
  };
}

/** A child runs the size; this process kills it when the machine runs short of memory. */
async function oneSize(model: string, mode: Mode, o: LargestOptions): Promise<SizeResult> {
  const t0 = performance.now();
  const child = spawn(
    process.execPath,
    [
      duelBin(),
      'bench',
      'largest',
      '--only',
      model,
      '--modes',
      mode,
      '--batch',
      `${o.batch}`,
      '--seq',
      `${o.seq}`,
      ...(o.checkpointing ? ['--gradient-checkpointing'] : []),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  let killedAt: number | undefined;
  const watch = setInterval(() => {
    const left = availableMb();
    if (left < o.reserveMb && killedAt === undefined) {
      killedAt = left;
      child.kill('SIGKILL');
    }
  }, 100);
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  clearInterval(watch);
  const seconds = (performance.now() - t0) / 1000;
  const params = parameterCount(model);
  if (killedAt !== undefined || code !== 0)
    return { model, mode, params, fits: false, available_mb_at_kill: killedAt ?? availableMb(), seconds };
  const r = JSON.parse(out.trim().split('\n').at(-1)!) as Awaited<ReturnType<typeof trainOnce>>;
  return {
    model,
    mode,
    params,
    fits: true,
    peak_rss_mb: r.peak_rss_mb,
    peak_forward_backward_mb: r.peak_forward_backward_mb,
    peak_optim_step_mb: r.peak_optim_step_mb,
    step_ms: r.step_ms,
    seconds,
  };
}

/** The parameter count of a shape, without allocating it. */
function parameterCount(model: string): number {
  const c = LADDER[model]!;
  const kv = c.numKvHeads * c.headDim;
  const layer =
    c.hiddenSize * (2 * c.hiddenSize + 2 * kv) + 3 * c.hiddenSize * c.intermediateSize + 2 * c.hiddenSize;
  const embed = c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? 1 : 2);
  return c.numLayers * layer + embed + c.hiddenSize;
}
