/**
 * `duel bench decode`: batched sampling throughput (tokens/s) of duel's KV-cache generation at
 * batch 1, 16 and 128 for a testbed-sized model and a ~22M-parameter one, against transformers.js
 * generating from the same exported ONNX model in the same run; judge pairs/s; model load time.
 * On another provider (`--provider webgpu`) the peer is the cpu provider on the same machine, and
 * each row says how many bytes crossed between host and device per generated token.
 */

import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ComputeDtype, type Provider, Runtime } from '../src/engine/index.js';
import { generate } from '../src/models/generate.js';
import { type JudgeConfig, parseJudgeConfig } from '../src/models/judge/config.js';
import { initJudgeWeights } from '../src/models/judge/model.js';
import { JudgeRunner } from '../src/models/judge/runner.js';
import { type LlamaConfig, parseLlamaConfig, toHfConfig } from '../src/models/llama/config.js';
import { exportDecoderOnnx } from '../src/models/llama/graphs.js';
import { DecoderRunner } from '../src/models/llama/runner.js';
import { initLlamaWeights, llamaParams } from '../src/models/llama/weights.js';
import { loadModelDir, saveModelDir } from '../src/models/model-dir.js';
import { benchScript } from '../src/platform/paths.js';

const base = { model_type: 'llama', rope_theta: 10000, eos_token_id: null, tie_word_embeddings: true };
export const DECODE_MODELS: Record<string, LlamaConfig> = {
  testbed: parseLlamaConfig({
    ...base,
    vocab_size: 32,
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    max_position_embeddings: 128,
  }),
  '25M': parseLlamaConfig({
    ...base,
    vocab_size: 8192,
    hidden_size: 512,
    intermediate_size: 1408,
    num_hidden_layers: 6,
    num_attention_heads: 8,
    num_key_value_heads: 4,
    max_position_embeddings: 256,
  }),
  /** HuggingFaceTB/SmolLM-135M's shape, random weights. */
  'smollm-135m': parseLlamaConfig({
    ...base,
    vocab_size: 49152,
    hidden_size: 576,
    intermediate_size: 1536,
    num_hidden_layers: 30,
    num_attention_heads: 9,
    num_key_value_heads: 3,
    max_position_embeddings: 2048,
  }),
};

export interface DecodeBenchOptions {
  batches: number[];
  promptLen: number;
  newTokens: number;
  peer: boolean;
  /** Greedy decoding instead of sampling at temperature 1. */
  greedy: boolean;
  /** Timed runs per measurement (the median is reported). */
  repeats: number;
  /** @default 'cpu' */
  provider?: Provider;
  /** What duel's decoder computes in (Runtime.dtype); the peers stay as they are. @default 'float32' */
  dtype?: ComputeDtype;
  /** Names of DECODE_MODELS. @default testbed and 25M */
  models?: string[];
  /** Each generation in one run (DecoderOptions.oneRun). @default true on cuda */
  oneRun?: boolean;
  log: (line: string) => void;
}

export interface DecodeRow {
  model: string;
  params: number;
  batch: number;
  duel_tokens_per_s: number;
  transformersjs_tokens_per_s?: number;
  speedup?: number;
  /** Host↔device bytes per generated token (another provider than cpu). */
  moved_per_token?: { toDevice: number; toHost: number };
  /** Outputs copied back by a run of their own per decoding step (Moved.readBacks). */
  read_backs_per_step?: number;
  cpu_tokens_per_s?: number;
  speedup_vs_cpu?: number;
}

export interface DecodeBenchResult {
  machine: { cpus: number; cpu_model: string; node: string };
  provider: Provider;
  dtype: ComputeDtype;
  /** Whether duel decoded each generation in one run. */
  one_run: boolean;
  rows: DecodeRow[];
  load_ms: Record<string, number>;
  judge_pairs_per_s: number;
}

const paramCount = (cfg: LlamaConfig) =>
  llamaParams(cfg).reduce((s, p) => s + p.shape.reduce((a, b) => a * b, 1), 0);

/** Median tokens/s of `runner` generating `newTokens` for `prompts`, after a warm-up. */
async function tokensPerS(runner: DecoderRunner, prompts: number[][], opts: DecodeBenchOptions) {
  const sampling = {
    n: 1,
    temperature: opts.greedy ? 0 : 1,
    topK: 0,
    topP: 1,
    seed: 0,
    eosIds: [],
    padId: 0,
  };
  await generate(runner, prompts, { ...sampling, maxNewTokens: 2 }); // warm-up
  const times: number[] = [];
  for (let i = 0; i < opts.repeats; i++) {
    const t1 = performance.now();
    await generate(runner, prompts, { ...sampling, maxNewTokens: opts.newTokens });
    times.push((performance.now() - t1) / 1000);
  }
  return (prompts.length * opts.newTokens) / times.sort((a, b) => a - b)[Math.floor(times.length / 2)]!;
}

export async function runDecodeBench(opts: DecodeBenchOptions): Promise<DecodeBenchResult> {
  const provider = opts.provider ?? 'cpu';
  const root = mkdtempSync(join(tmpdir(), 'duel-bench-decode-'));
  const dtype = opts.dtype ?? 'float32';
  const runtime = new Runtime({ workers: 1, provider, dtype });
  // The peer on another provider: the cpu provider, same machine, same weights.
  const cpuPeer = provider !== 'cpu' && opts.peer ? new Runtime({ workers: 1 }) : undefined;
  const rows: DecodeRow[] = [];
  const loadMs: Record<string, number> = {};
  const models = opts.models ?? ['testbed', '25M'];
  for (const m of models)
    if (!DECODE_MODELS[m])
      throw new Error(`unknown model '${m}' (known: ${Object.keys(DECODE_MODELS).join(', ')})`);
  try {
    for (const name of models) {
      const cfg = DECODE_MODELS[name]!;
      const dir = join(root, name);
      saveModelDir(dir, cfg, initLlamaWeights(cfg, 1));
      const t0 = performance.now();
      const m = loadModelDir(dir);
      const runner = await DecoderRunner.create(runtime, m.config, m.weights, undefined, {
        oneRun: opts.oneRun ?? provider === 'cuda',
      });
      loadMs[name] = performance.now() - t0;
      opts.log(
        `${name}: ${(paramCount(cfg) / 1e6).toFixed(2)}M parameters, loaded in ${loadMs[name]!.toFixed(0)} ms`,
      );
      const onCpu = cpuPeer ? await DecoderRunner.create(cpuPeer, m.config, m.weights) : undefined;
      const transformersPeer = opts.peer && provider === 'cpu';
      if (transformersPeer) {
        mkdirSync(join(dir, 'onnx'));
        writeFileSync(join(dir, 'onnx', 'model.onnx'), exportDecoderOnnx(m.config, m.weights).bytes);
      }

      for (const batch of opts.batches) {
        const prompts = Array.from({ length: batch }, (_, b) =>
          Array.from({ length: opts.promptLen }, (_, t) => 4 + ((b + t) % 7)),
        );
        const before = runner.moved;
        const ours = await tokensPerS(runner, prompts, opts);
        const row: DecodeRow = { model: name, params: paramCount(cfg), batch, duel_tokens_per_s: ours };
        if (provider !== 'cpu') {
          // Warm-up and timed runs alike: (repeats + 1) generations, 2 + repeats·newTokens tokens a row.
          const tokens = batch * (2 + opts.repeats * opts.newTokens);
          const after = runner.moved;
          row.moved_per_token = {
            toDevice: (after.toDevice - before.toDevice) / tokens,
            toHost: (after.toHost - before.toHost) / tokens,
          };
          row.read_backs_per_step = (after.readBacks - before.readBacks) / (tokens / batch);
        }
        if (onCpu) {
          row.cpu_tokens_per_s = await tokensPerS(onCpu, prompts, opts);
          row.speedup_vs_cpu = ours / row.cpu_tokens_per_s;
        }
        if (transformersPeer) {
          const script = benchScript('transformersjs-peer.js');
          const child = spawnSync(
            process.execPath,
            [
              script,
              root,
              name,
              String(batch),
              String(opts.promptLen),
              String(opts.newTokens),
              opts.greedy ? 'greedy' : 'sample',
              String(opts.repeats),
            ],
            { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] },
          );
          if (child.status !== 0) throw new Error(`transformers.js peer failed (exit ${child.status})`);
          const peer = JSON.parse(child.stdout.trim().split('\n').at(-1)!) as { tokens_per_s: number };
          row.transformersjs_tokens_per_s = peer.tokens_per_s;
          row.speedup = ours / peer.tokens_per_s;
        }
        rows.push(row);
        opts.log(
          `  batch ${batch}: duel ${ours.toFixed(0)} tok/s${row.speedup ? `, transformers.js ${row.transformersjs_tokens_per_s!.toFixed(0)} tok/s (${row.speedup.toFixed(2)}×)` : ''}${row.cpu_tokens_per_s ? `, cpu provider ${row.cpu_tokens_per_s.toFixed(0)} tok/s (${row.speedup_vs_cpu!.toFixed(2)}×)` : ''}${row.moved_per_token ? `, ${row.moved_per_token.toDevice.toFixed(0)} B/token to the device, ${row.moved_per_token.toHost.toFixed(0)} back, ${row.read_backs_per_step!.toFixed(0)} read-backs a step` : ''}`,
        );
      }
      await runner.release();
      await onCpu?.release();
    }

    const judgeCfg: JudgeConfig = parseJudgeConfig({
      model_type: 'duel_pairrm',
      encoder: toHfConfig(DECODE_MODELS.testbed!),
      source_token_id: 29,
      candidate1_token_id: 30,
      candidate2_token_id: 31,
    });
    const judge = await JudgeRunner.create(runtime, judgeCfg, initJudgeWeights(judgeCfg, 1));
    const k = 8;
    const cands = Array.from({ length: k }, (_, i) =>
      Array.from({ length: 16 }, (_, t) => 4 + ((i * 3 + t) % 20)),
    );
    await judge.compare([1, 2, 3, 4, 5, 6, 7, 8], cands);
    const t2 = performance.now();
    const prompts = 8;
    for (let p = 0; p < prompts; p++) await judge.compare([1 + p, 2, 3, 4, 5, 6, 7, 8], cands);
    const pairsPerS = (prompts * k * (k - 1)) / ((performance.now() - t2) / 1000);
    opts.log(`judge (testbed-sized, K=${k}, 16-token candidates): ${pairsPerS.toFixed(0)} pairs/s`);
    await judge.release();
    return {
      machine: { cpus: cpus().length, cpu_model: cpus()[0]?.model ?? 'unknown', node: process.version },
      provider,
      dtype,
      one_run: opts.oneRun ?? provider === 'cuda',
      rows,
      load_ms: loadMs,
      judge_pairs_per_s: pairsPerS,
    };
  } finally {
    await runtime.close();
    await cpuPeer?.close();
    rmSync(root, { recursive: true, force: true });
  }
}
