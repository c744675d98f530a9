/**
 * `duel bench train`: training throughput of every round recipe on the testbed-sized model and the
 * ~25M config, end to end (frozen π_t/π_ref passes included) and in the step loop alone, and the
 * cost per token relative to SFT on the same records.
 */
import { cpus } from 'node:os';
import { RECIPES } from '../src/algorithms/recipes/index.js';
import { trainRound } from '../src/algorithms/train-round.js';
import { Runtime } from '../src/engine/index.js';
import { rng } from '../src/models/common/rng.js';
import { initLlamaWeights } from '../src/models/llama/weights.js';
import { DECODE_MODELS } from './decode.js';

export interface TrainBenchRow {
  model: string;
  algo: string;
  tokens: number;
  seconds: number;
  loop_seconds: number;
  tokens_per_s: number;
  loop_tokens_per_s: number;
  cost_vs_sft: number;
}

export async function runTrainBench(opts: {
  steps: number;
  records: number;
  k: number;
  length: number;
  log: (line: string) => void;
}): Promise<{ machine: { cpus: number; cpu_model: string; node: string }; rows: TrainBenchRow[] }> {
  const runtime = new Runtime({ workers: 1 });
  const rows: TrainBenchRow[] = [];
  try {
    for (const [name, cfg] of Object.entries(DECODE_MODELS)) {
      const r = rng(1);
      const tok = () => 4 + Math.floor(r() * (cfg.vocabSize - 4));
      const records = Array.from({ length: opts.records }, () => {
        const prefs = Array.from({ length: opts.k }, () => new Array<number>(opts.k).fill(0.5));
        for (let i = 0; i < opts.k; i++)
          for (let j = i + 1; j < opts.k; j++) {
            prefs[i]![j] = r();
            prefs[j]![i] = 1 - prefs[i]![j]!;
          }
        return {
          prompt_ids: Array.from({ length: opts.length / 2 }, tok),
          completion_ids: Array.from({ length: opts.k }, () => Array.from({ length: opts.length }, tok)),
          prefs,
        };
      });
      const weights = initLlamaWeights(cfg, 1);
      let sftCost = Number.NaN;
      for (const algo of Object.keys(RECIPES).filter((a) => !['dpo', 'ipo', 'ipo_md'].includes(a))) {
        const t0 = performance.now();
        const { metrics } = await trainRound(runtime, {
          algo,
          hparams: {},
          config: cfg,
          weights,
          reference: weights,
          records,
          optimizer: { kind: 'adamw' },
          lr: 1e-4,
          steps: opts.steps,
          batchSize: 8,
          gradClip: 1,
          seed: 0,
        });
        const seconds = (performance.now() - t0) / 1000;
        const cost = seconds / metrics.tokens;
        if (algo === 'sft') sftCost = cost;
        const row: TrainBenchRow = {
          model: name,
          algo,
          tokens: metrics.tokens,
          seconds,
          loop_seconds: metrics.seconds,
          tokens_per_s: metrics.tokens / seconds,
          loop_tokens_per_s: metrics.tokens_per_s,
          cost_vs_sft: cost / sftCost,
        };
        rows.push(row);
        opts.log(
          `${name} ${algo}: ${row.tokens_per_s.toFixed(0)} tokens/s end to end, ${row.loop_tokens_per_s.toFixed(0)} in the step loop, ${row.cost_vs_sft.toFixed(2)}× SFT's cost per token`,
        );
      }
    }
  } finally {
    await runtime.close();
  }
  return {
    machine: { cpus: cpus().length, cpu_model: cpus()[0]?.model ?? 'unknown', node: process.version },
    rows,
  };
}
