/**
 * One training round of any recipe: round records → rows per slot → frozen log-probs (π_t,
 * π_ref) → a training graph (θ's log-probs of every slot, the recipe's loss, the optimizer) →
 * steps over batches of records. π_θ starts from the round's model, which is also π_t. A step
 * whose loss or gradient is not finite is skipped and counted; a round in which no step applied,
 * or whose last loss is not finite, is reported as diverged and its weights must not be saved.
 */
import { type Graph, type Runtime, T, type Tensor, TrainingState, type WireTensor } from '../engine/index.js';
import { completionBatch } from '../models/batch.js';
import { rng } from '../models/common/rng.js';
import { generate } from '../models/generate.js';
import type { LlamaConfig } from '../models/llama/config.js';
import { LogprobRunner } from '../models/llama/logprob-runner.js';
import { sequenceLogprobs } from '../models/llama/logprobs.js';
import { DecoderRunner } from '../models/llama/runner.js';
import { type HostTensor, llamaParams } from '../models/llama/weights.js';
import { DuelError } from '../platform/errors.js';
import { winnerLoser, winRates } from './estimators.js';
import { type Recipe, type RoundRecord, type Row, recipeFor, type SlotLogps } from './recipes/index.js';
import { type LoopSettings, plan, type RoundMetrics, runSteps } from './steps.js';

export type { RoundMetrics } from './steps.js';

export interface TrainRoundOptions extends LoopSettings {
  algo: string;
  hparams: Record<string, unknown>;
  config: LlamaConfig;
  /** π_θ's starting weights, which are also π_t's. */
  weights: Record<string, HostTensor>;
  reference?: Record<string, HostTensor>;
  records: RoundRecord[];
}

export function checkRecords(records: RoundRecord[], vocab: number, needPrefs = true): void {
  if (records.length === 0)
    throw DuelError.invalidArgument([{ field: 'data', description: 'holds no records' }]);
  records.forEach((r, i) => {
    const k = r.completion_ids.length;
    const bad = (field: string, description: string) =>
      DuelError.invalidArgument([{ field: `records[${i}].${field}`, description }]);
    if (k < (needPrefs ? 2 : 1))
      throw bad('completion_ids', `needs at least ${needPrefs ? 2 : 1} completions, got ${k}`);
    if (needPrefs && (r.prefs.length !== k || r.prefs.some((row) => row.length !== k)))
      throw bad('prefs', `must be ${k}×${k} (one row and column per completion)`);
    for (const [a, row] of (needPrefs ? r.prefs : []).entries())
      for (const [b, p] of row.entries()) {
        if (!(p >= 0 && p <= 1)) throw bad(`prefs[${a}][${b}]`, `must be a probability, got ${p}`);
        if (Math.abs(p + r.prefs[b]![a]! - 1) > 1e-6)
          throw bad(`prefs[${a}][${b}]`, `prefs[i][j] + prefs[j][i] must be 1, got ${p} + ${r.prefs[b]![a]}`);
      }
    for (const ids of [r.prompt_ids, ...r.completion_ids]) {
      const id = ids.find((x) => !Number.isInteger(x) || x < 0 || x >= vocab);
      if (id !== undefined)
        throw bad('completion_ids', `token id ${id} is outside the vocabulary [0, ${vocab})`);
    }
  });
}

interface SlotData {
  rows: Row[][]; // per record
  t: number[][];
  ref: number[][];
  /** π_ref's per-token log-probs of each row's completion (per record, per row). */
  refTokens: number[][][];
}

/**
 * Log-prob sessions for the frozen passes of one round, one per weight set (π_t, π_ref, the
 * trained weights), built once and reused across slots, resampling and the round's figures.
 */
class FrozenScorers {
  private readonly runners = new Map<object, Promise<LogprobRunner>>();

  constructor(
    private readonly runtime: Runtime,
    private readonly cfg: LlamaConfig,
  ) {}

  async logprobs(weights: Record<string, HostTensor>, rows: Row[]) {
    let runner = this.runners.get(weights);
    if (!runner) {
      runner = LogprobRunner.create(this.runtime, this.cfg, weights);
      this.runners.set(weights, runner);
    }
    return (await runner).logprobs(
      rows.map((r) => ({ promptIds: r.promptIds, completionIds: r.completionIds })),
    );
  }

  async release(): Promise<void> {
    for (const runner of this.runners.values()) await (await runner).release();
    this.runners.clear();
  }
}

function program(
  cfg: LlamaConfig,
  recipe: Recipe<never>,
  hp: never,
  slots: string[],
  scalars: Record<string, string[]>,
) {
  return {
    dtype: 'float32' as const,
    build(g: Graph, param: (name: string, shape: number[]) => Tensor) {
      const shapes = new Map(llamaParams(cfg).map((p) => [p.name, p.shape]));
      const weights = new Map<string, Tensor>();
      const w = (name: string) => {
        if (!weights.has(name)) weights.set(name, param(name, shapes.get(name)!));
        return weights.get(name)!;
      };
      const logps: Record<string, SlotLogps> = {};
      for (const slot of slots) {
        // Every slot has the same rows per record, so one symbol R serves all; lengths differ.
        const [rows, len] = ['R', `T_${slot}`];
        const input = (n: string, dtype: 'int64' | 'float32') => g.input(`${slot}/${n}`, dtype, [rows, len]);
        const mask = input('target_mask', 'float32');
        const { summed, perToken } = sequenceLogprobs(cfg, w, {
          inputIds: input('input_ids', 'int64'),
          attentionMask: input('attention_mask', 'int64'),
          targets: input('targets', 'int64'),
          targetMask: mask,
        });
        const vec = (n: string) => g.input(`${slot}/${n}`, 'float32', [rows]);
        const named = new Map((scalars[slot] ?? []).map((n) => [n, vec(`scalar.${n}`)]));
        logps[slot] = {
          theta: summed,
          tokTheta: perToken,
          mask,
          ...(recipe.needs.refTokens ? { tokRef: input('ref_tokens', 'float32') } : {}),
          ...(recipe.needs.t ? { t: vec('t') } : {}),
          ...(recipe.needs.ref ? { ref: vec('ref') } : {}),
          scalar: (n) => {
            const s = named.get(n);
            if (!s) throw new Error(`${recipe.name}: slot '${slot}' has no scalar '${n}'`);
            return s;
          },
        };
      }
      return T.mean(recipe.loss(logps, hp));
    },
  };
}

export async function trainRound(
  runtime: Runtime,
  o: TrainRoundOptions,
): Promise<{ weights: Record<string, HostTensor>; metrics: RoundMetrics }> {
  const frozen = new FrozenScorers(runtime, o.config);
  try {
    return await trainRoundWith(runtime, o, frozen);
  } finally {
    await frozen.release();
  }
}

async function trainRoundWith(
  runtime: Runtime,
  o: TrainRoundOptions,
  frozen: FrozenScorers,
): Promise<{ weights: Record<string, HostTensor>; metrics: RoundMetrics }> {
  const { recipe, hp } = recipeFor(o.algo, o.hparams);
  checkRecords(o.records, o.config.vocabSize, recipe.needs.prefs ?? true);
  if ((recipe.needs.ref || recipe.needs.refTokens) && !o.reference)
    throw DuelError.invalidArgument([
      { field: 'ref', description: `${o.algo} needs a reference model (--ref)` },
    ]);
  const slots = recipe.slots(hp);
  const draw = rng(o.seed);
  const perRecord = o.records.map((r) => recipe.rows(r, hp, draw));

  const data: Record<string, SlotData> = {};
  for (const slot of slots) {
    const rows = perRecord.map((rec) => rec[slot] ?? []);
    const counts = new Set(rows.map((r) => r.length));
    if (counts.size !== 1)
      throw DuelError.invalidArgument([
        {
          field: 'data',
          description: `${o.algo}: every record must give the same number of rows (mixed K?)`,
        },
      ]);
    const flat = rows.flat();
    const m = rows[0]!.length;
    const regroup = <X>(xs: X[]) => rows.map((_, i) => xs.slice(i * m, (i + 1) * m));
    const t = recipe.needs.t ? await frozen.logprobs(o.weights, flat) : [];
    const ref = recipe.needs.ref || recipe.needs.refTokens ? await frozen.logprobs(o.reference!, flat) : [];
    data[slot] = {
      rows,
      t: regroup(t.map((x) => x.summed)),
      ref: regroup(ref.map((x) => x.summed)),
      refTokens: regroup(ref.map((x) => x.perToken)),
    };
  }
  const scalars = Object.fromEntries(slots.map((s) => [s, Object.keys(data[s]!.rows[0]![0]!.scalars)]));

  const state = await TrainingState.create(
    runtime,
    program(o.config, recipe, hp, slots, scalars),
    { optimizer: o.optimizer, gradClip: o.gradClip },
    plan(o, o.records.length).schedule,
    o.weights,
  );
  const vec = (xs: number[]): WireTensor => ({
    dtype: 'float32',
    dims: [xs.length],
    data: Float32Array.from(xs),
  });
  try {
    const resample = selfSampler(runtime, o, recipe, hp, data, state, frozen);
    const result = await runSteps(state, {
      algo: o.algo,
      records: o.records.length,
      batchSize: o.batchSize,
      ...(o.steps !== undefined ? { steps: o.steps } : {}),
      ...(o.epochs !== undefined ? { epochs: o.epochs } : {}),
      draw,
      ...(resample ? { beforeStep: resample.beforeStep } : {}),
      ...(o.onStep ? { onStep: o.onStep } : {}),
      feeds(batch) {
        const feeds: Record<string, WireTensor> = {};
        let tokens = 0;
        for (const slot of slots) {
          const d = data[slot]!;
          const rows = batch.flatMap((i) => d.rows[i]!);
          const b = completionBatch(
            rows.map((r) => ({ promptIds: r.promptIds, completionIds: r.completionIds })),
            o.config.padTokenId ?? 0,
            o.config.vocabSize,
          );
          const dims = [b.batch, b.length];
          feeds[`${slot}/input_ids`] = { dtype: 'int64', dims, data: b.inputIds };
          feeds[`${slot}/attention_mask`] = { dtype: 'int64', dims, data: b.attentionMask };
          feeds[`${slot}/targets`] = { dtype: 'int64', dims, data: b.targets };
          feeds[`${slot}/target_mask`] = { dtype: 'float32', dims, data: b.targetMask };
          if (recipe.needs.refTokens) {
            // Completion token k of a row is predicted at position promptLength − 1 + k.
            const grid = new Float32Array(b.batch * b.length);
            const perRow = batch.flatMap((i) => d.refTokens[i]!);
            rows.forEach((r, n) => {
              grid.set(perRow[n]!, n * b.length + r.promptIds.length - 1);
            });
            feeds[`${slot}/ref_tokens`] = { dtype: 'float32', dims, data: grid };
          }
          if (recipe.needs.t) feeds[`${slot}/t`] = vec(batch.flatMap((i) => d.t[i]!));
          if (recipe.needs.ref) feeds[`${slot}/ref`] = vec(batch.flatMap((i) => d.ref[i]!));
          for (const n of scalars[slot]!) feeds[`${slot}/scalar.${n}`] = vec(rows.map((r) => r.scalars[n]!));
          tokens += rows.reduce((s, r) => s + r.promptIds.length + r.completionIds.length, 0);
        }
        return { feeds, tokens };
      },
    });
    if (resample) result.metrics.resamples = resample.count();
    if (!result.metrics.diverged)
      Object.assign(result.metrics, await roundStats(runtime, o, result.weights, frozen));
    return result;
  } finally {
    await state.dispose();
  }
}

/**
 * SPO's intermittent sampling: every `every` steps, draw one completion per record from the
 * current weights (a decoding session over the training state's parameters), and score it under
 * π_ref for the slot's frozen term.
 */
function selfSampler(
  runtime: Runtime,
  o: TrainRoundOptions,
  recipe: Recipe<never>,
  hp: never,
  data: Record<string, SlotData>,
  state: TrainingState,
  frozen: FrozenScorers,
) {
  const spec = recipe.selfSamples?.(hp);
  if (!spec) return undefined;
  let count = 0;
  return {
    count: () => count,
    async beforeStep(step: number) {
      if (step === 0 || step % spec.every !== 0) return;
      const params = (await state.parameters()) as Record<string, HostTensor>;
      const gens = await sampleOnce(runtime, o, params, spec.maxNewTokens, o.seed + step);
      const rows = gens.map((g) => [
        { promptIds: o.records[g.prompt]!.prompt_ids, completionIds: g.tokens, scalars: {} },
      ]);
      const ref = await frozen.logprobs(o.reference!, rows.flat());
      data[spec.slot] = {
        rows,
        t: [],
        ref: ref.map((x) => [x.summed]),
        refTokens: ref.map((x) => [x.perToken]),
      };
      count++;
    },
  };
}

/**
 * The per-round figures of ALGORITHMS.md that need the trained weights: mean ℓ = logp_θ − logp_t
 * over the round's completions, mean Δ over winner/loser pairs (with a reference), and on one fresh
 * sample per prompt from π_θ: KL(π_θ‖π_ref) (mean of logp_θ − logp_ref), token entropy and length.
 */
async function roundStats(
  runtime: Runtime,
  o: TrainRoundOptions,
  trained: Record<string, HostTensor>,
  frozen: FrozenScorers,
) {
  const all = o.records.flatMap((r) =>
    r.completion_ids.map((c) => ({ promptIds: r.prompt_ids, completionIds: c, scalars: {} })),
  );
  const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Number.NaN);
  const theta = (await frozen.logprobs(trained, all)).map((x) => x.summed);
  const start = (await frozen.logprobs(o.weights, all)).map((x) => x.summed);
  const stats: Partial<RoundMetrics> = { mean_ell: mean(theta.map((x, i) => x - start[i]!)) };

  const gens = await sampleOnce(
    runtime,
    o,
    trained,
    Math.max(...all.map((r) => r.completionIds.length)),
    o.seed,
  );
  stats.entropy = mean(gens.flatMap((g) => g.entropies));
  stats.completion_length = mean(gens.map((g) => g.tokens.length));
  if (o.reference) {
    const ref = await frozen.logprobs(
      o.reference,
      gens.map((g) => ({
        promptIds: o.records[g.prompt]!.prompt_ids,
        completionIds: g.tokens,
        scalars: {},
      })),
    );
    stats.kl_to_ref = mean(gens.map((g, i) => g.logprobs.reduce((a, b) => a + b, 0) - ref[i]!.summed));
    if (o.records.every((r) => r.prefs.length === r.completion_ids.length && r.prefs.length >= 2)) {
      const refAll = (await frozen.logprobs(o.reference, all)).map((x) => x.summed);
      let at = 0;
      const gaps = o.records.map((r) => {
        const base = at;
        at += r.completion_ids.length;
        const { winner, loser } = winnerLoser(winRates(r.prefs));
        const ratio = (i: number) => theta[base + i]! - refAll[base + i]!;
        return ratio(winner) - ratio(loser);
      });
      stats.mean_delta = mean(gaps);
    }
  }
  return stats;
}

/** One completion per record's prompt from `weights` at temperature 1, within the position limit. */
async function sampleOnce(
  runtime: Runtime,
  o: TrainRoundOptions,
  weights: Record<string, HostTensor>,
  maxNewTokens: number,
  seed: number,
) {
  const policy = await DecoderRunner.create(runtime, o.config, weights);
  const room = o.config.maxPositions - Math.max(...o.records.map((r) => r.prompt_ids.length));
  try {
    return await generate(
      policy,
      o.records.map((r) => r.prompt_ids),
      {
        n: 1,
        temperature: 1,
        topK: 0,
        topP: 1,
        maxNewTokens: Math.max(1, Math.min(room, maxNewTokens)),
        seed,
        eosIds: o.config.eosTokenIds,
        padId: o.config.padTokenId ?? 0,
      },
    );
  } finally {
    await policy.release();
  }
}
