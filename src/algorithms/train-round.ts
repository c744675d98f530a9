/**
 * One training round of any recipe: round records → rows per slot → frozen log-probs (π_t,
 * π_ref, whichever the recipe declares) → a training graph (θ's log-probs of every slot, the
 * recipe's loss, the optimizer) → steps over batches of records. π_θ starts from the round's model,
 * which is also π_t. A step whose loss or gradient is not finite is skipped and counted; a round in
 * which no step applied, or whose last loss is not finite, is reported as diverged and its weights
 * must not be saved. Nothing here names an algorithm: what differs between them is the recipe's.
 *
 * With an adapter, the round trains LoRA's A and B on the frozen base: π_θ and π_t are base +
 * adapter, π_ref is the base without it unless a reference is given, and the round's weights are
 * the adapter's tensors. The base is held once, in one worker (SharedTensors): the training state,
 * the frozen log-probs and the round's sampling all read it there.
 */
import {
  type ComputeDtype,
  type LossScaleSpec,
  type Provider,
  type Runtime,
  SharedTensors,
  TrainingState,
} from '../engine/index.js';
import { DuelError } from '../errors.js';
import type { CompletionRecord } from '../models/batch.js';
import { rng } from '../models/common/rng.js';
import { generate } from '../models/generate.js';
import type { LlamaConfig } from '../models/llama/config.js';
import { LogprobRunner, type Scorer } from '../models/llama/logprob-runner.js';
import { DecoderRunner } from '../models/llama/runner.js';
import type { HostTensor } from '../models/llama/weights.js';
import { type Adapter, initAdapter } from '../models/lora/adapter.js';
import type { LoraConfig } from '../models/lora/config.js';
import { klOnSamples, winnerLoser, winRates } from './estimators.js';
import { type RoundRecord, recipeFor } from './recipes/index.js';
import {
  type FrozenModel,
  frozenModels,
  RoundProgram,
  roundData,
  type ScoreRows,
  scoreSlot,
  slotExamples,
  stepBatch,
} from './round-program.js';
import { type LoopSettings, plan, type RoundMetrics, runSteps } from './steps.js';

export type { RoundMetrics } from './steps.js';

export interface TrainRoundOptions extends LoopSettings {
  algo: string;
  hparams: Record<string, unknown>;
  config: LlamaConfig;
  /** π_θ's starting weights, which are also π_t's (with an adapter: the frozen base). */
  weights: Record<string, HostTensor>;
  reference?: Record<string, HostTensor>;
  /** Train this LoRA adapter (fresh or continued) on the frozen `weights`. */
  adapter?: Adapter;
  records: RoundRecord[];
  /** On a runtime computing in float16: how the loss is scaled (loss-scale.ts; GradScaler's defaults). */
  lossScale?: LossScaleSpec;
  /**
   * Steps per runtime call (an ONNX Loop, engine/loop.ts): the weights and optimizer state cross
   * between host and device once per call instead of once per step, which is what a provider
   * without device-resident state between runs (cuda, from Node) needs.
   * @default foldStepsFor's: 8 on cuda where a round can fold, else 1
   */
  foldSteps?: number;
  /** Gradient checkpointing of the decoder's layers: less memory, one more forward pass a step. */
  checkpointing?: boolean;
}

/** A model the round scores or samples from: weights, and an adapter on them. */
interface Model {
  weights: Record<string, HostTensor>;
  adapter?: Adapter | undefined;
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

/**
 * Log-prob sessions for the frozen passes of one round (π_t, π_ref, the trained weights), built
 * once and reused across slots, resampling and the round's figures. Full weights: one session per
 * weight set. A LoRA round: one session per base, every model on it an adapter set into that
 * session (the base alone through a zero adapter, B = 0, which adds exactly nothing), so π_t,
 * π_ref and π_θ hold the base once rather than once each; the round's base is read where the
 * round's shared tensors hold it, not copied.
 */
class FrozenScorers {
  private readonly runners = new Map<Model, Promise<LogprobRunner>>();
  private readonly bases = new Map<
    Record<string, HostTensor>,
    { runner: Promise<LogprobRunner>; keys: Map<Adapter | undefined, Promise<Scorer>> }
  >();

  constructor(
    private readonly runtime: Runtime,
    private readonly cfg: LlamaConfig,
    /** What the frozen passes compute in: the training graph's dtype, so that π_θ = π_t at step 0 holds to its rounding. */
    private readonly dtype: ComputeDtype,
    /** The round's adapter shape and its base, held once, when it trains one. */
    private readonly lora?: { config: LoraConfig; weights: Record<string, HostTensor>; base: SharedTensors },
  ) {}

  private scorer(model: Model): Promise<Scorer> {
    const lora = this.lora;
    if (!lora) {
      let runner = this.runners.get(model);
      if (!runner) {
        runner = LogprobRunner.create(this.runtime, this.cfg, model.weights, model.adapter, {
          dtype: this.dtype,
        });
        this.runners.set(model, runner);
      }
      return runner;
    }
    let base = this.bases.get(model.weights);
    if (!base) {
      const { targets } = lora.config;
      const options = { dtype: this.dtype };
      base = {
        runner:
          model.weights === lora.weights
            ? LogprobRunner.fromState(this.runtime, this.cfg, lora.base.source, targets, options)
            : LogprobRunner.forAdapters(this.runtime, this.cfg, model.weights, targets, options),
        keys: new Map(),
      };
      this.bases.set(model.weights, base);
    }
    let scorer = base.keys.get(model.adapter);
    if (!scorer) {
      const { runner } = base;
      const key = `model-${base.keys.size}`;
      scorer = (async () => {
        const r = await runner;
        await r.setAdapter(key, model.adapter ?? initAdapter(this.cfg, lora.config, 0));
        return r.withAdapter(key);
      })();
      base.keys.set(model.adapter, scorer);
    }
    return scorer;
  }

  async logprobs(model: Model, rows: readonly CompletionRecord[]) {
    return (await this.scorer(model)).logprobs(
      rows.map((r) => ({ promptIds: r.promptIds, completionIds: r.completionIds })),
    );
  }

  async release(): Promise<void> {
    for (const runner of this.runners.values()) await (await runner).release();
    for (const { runner } of this.bases.values()) await (await runner).release();
    this.runners.clear();
    this.bases.clear();
  }
}

/**
 * The steps a round folds into one call unless told: 8 on cuda, whose state crosses the bus at
 * every call (a round's steps are usually tens), where the round can fold (float32, a recipe that
 * does not sample between steps); elsewhere 1, since a device-resident state gains nothing from
 * it (a folded step on webgpu measured 7–9× slower: BENCHMARKS.md, "GPU").
 */
export function foldStepsFor(provider: Provider, dtype: ComputeDtype, selfSamples: boolean): number {
  return provider === 'cuda' && dtype === 'float32' && !selfSamples ? 8 : 1;
}

/** The steps per call a round may fold, refused naming `fold_steps` where folding cannot work. */
function checkFold(steps: number, selfSamples: boolean, dtype: ComputeDtype): number {
  const bad = (description: string) => DuelError.invalidArgument([{ field: 'fold_steps', description }]);
  if (!Number.isInteger(steps) || steps < 1) throw bad(`must be an integer >= 1, got ${steps}`);
  if (steps === 1) return 1;
  if (selfSamples) throw bad('cannot fold a recipe that samples between its steps (SPO)');
  if (dtype === 'float16')
    throw bad('cannot fold float16 steps: the loss scale moves between steps on the host');
  return steps;
}

export async function trainRound(
  runtime: Runtime,
  o: TrainRoundOptions,
): Promise<{ weights: Record<string, HostTensor>; metrics: RoundMetrics; adapter?: Adapter }> {
  const base = o.adapter ? await SharedTensors.create(runtime, o.weights) : undefined;
  const frozen = new FrozenScorers(
    runtime,
    o.config,
    runtime.dtype,
    o.adapter && base ? { config: o.adapter.config, weights: o.weights, base } : undefined,
  );
  try {
    return await trainRoundWith(runtime, o, frozen, base);
  } finally {
    await frozen.release();
    await base?.dispose();
  }
}

async function trainRoundWith(
  runtime: Runtime,
  o: TrainRoundOptions,
  frozen: FrozenScorers,
  /** A LoRA round's base, held once. */
  base: SharedTensors | undefined,
): Promise<{ weights: Record<string, HostTensor>; metrics: RoundMetrics; adapter?: Adapter }> {
  const recipe = recipeFor(o.algo, o.hparams);
  checkRecords(o.records, o.config.vocabSize, recipe.recipe.needsPrefs);
  const selfSamples = recipe.selfSamples !== undefined;
  const fold = checkFold(
    o.foldSteps ?? foldStepsFor(runtime.provider, runtime.dtype, selfSamples),
    selfSamples,
    runtime.dtype,
  );
  // With an adapter the base model itself is the natural reference: no second copy needed.
  const reference = o.reference ?? (o.adapter ? o.weights : undefined);
  if (recipe.recipe.usesReference && !reference)
    throw DuelError.invalidArgument([
      { field: 'ref', description: `${o.algo} needs a reference model (--ref)` },
    ]);
  const start: Model = { weights: o.weights, adapter: o.adapter };
  const models: Record<FrozenModel, Model | undefined> = {
    policy: start,
    reference: reference ? { weights: reference } : undefined,
  };
  const needed = frozenModels(recipe);
  const score: ScoreRows = (model, rows) => frozen.logprobs(models[model]!, rows);
  const draw = rng(o.seed);
  const data = await roundData(recipe, o.records, draw, score);
  const program = new RoundProgram(
    o.config,
    recipe,
    slotExamples(data),
    o.adapter ? { base: o.weights, adapter: o.adapter.config } : undefined,
    { dtype: runtime.dtype, checkpointing: o.checkpointing ?? false },
  );
  const state = await TrainingState.create(
    runtime,
    program,
    { optimizer: o.optimizer, gradClip: o.gradClip },
    plan(o, o.records.length).schedule,
    o.adapter ? o.adapter.tensors : o.weights,
    {
      ...(base ? { shared: base } : {}),
      ...(runtime.dtype === 'float16' ? { lossScale: o.lossScale ?? {} } : {}),
      ...(fold > 1 ? { fold: true } : {}),
    },
  );
  /** The model the training state's parameters stand for. */
  const current = (params: Record<string, HostTensor>): Model =>
    o.adapter
      ? { weights: o.weights, adapter: { config: o.adapter.config, tensors: params } }
      : { weights: params };
  try {
    const self = recipe.selfSamples;
    let resamples = 0;
    const result = await runSteps(state, {
      algo: o.algo,
      fold,
      records: o.records.length,
      batchSize: o.batchSize,
      ...(o.steps !== undefined ? { steps: o.steps } : {}),
      ...(o.epochs !== undefined ? { epochs: o.epochs } : {}),
      draw,
      // SPO's intermittent sampling: the slot's rows become one fresh completion per record from
      // the current weights (a decoding session over the training state's parameters).
      ...(self
        ? {
            async beforeStep(step: number) {
              if (step === 0 || step % self.every !== 0) return;
              const params = (await state.parameters()) as Record<string, HostTensor>;
              const gens = await sampleOnce(
                runtime,
                o,
                current(params),
                base,
                self.maxNewTokens,
                o.seed + step,
              );
              data[self.slot] = await scoreSlot(
                gens.map((g) => [
                  { promptIds: o.records[g.prompt]!.prompt_ids, completionIds: g.tokens, features: {} },
                ]),
                needed,
                score,
              );
              resamples++;
            },
          }
        : {}),
      ...(o.onStep ? { onStep: o.onStep } : {}),
      feeds(batch) {
        const { step, tokens } = stepBatch(data, batch, o.config);
        return { feeds: program.feeds(step), tokens };
      },
    });
    if (self) result.metrics.resamples = resamples;
    const trained = current(result.weights);
    if (!result.metrics.diverged)
      Object.assign(
        result.metrics,
        await roundStats(runtime, o, start, trained, models.reference, frozen, base),
      );
    return trained.adapter ? { ...result, adapter: trained.adapter } : result;
  } finally {
    await state.dispose();
  }
}

/**
 * The per-round figures of docs/algorithms.md that need the trained weights: mean ℓ = logp_θ − logp_t
 * over the round's completions, mean Δ over winner/loser pairs (with a reference), and on one fresh
 * sample per prompt from π_θ: KL(π_θ‖π_ref) (mean of logp_θ − logp_ref), token entropy and length.
 */
async function roundStats(
  runtime: Runtime,
  o: TrainRoundOptions,
  start: Model,
  trained: Model,
  reference: Model | undefined,
  frozen: FrozenScorers,
  base: SharedTensors | undefined,
) {
  const all = o.records.flatMap((r) =>
    r.completion_ids.map((c) => ({ promptIds: r.prompt_ids, completionIds: c })),
  );
  const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Number.NaN);
  const theta = (await frozen.logprobs(trained, all)).map((x) => x.summed);
  const before = (await frozen.logprobs(start, all)).map((x) => x.summed);
  const stats: Partial<RoundMetrics> = { mean_ell: mean(theta.map((x, i) => x - before[i]!)) };

  const gens = await sampleOnce(
    runtime,
    o,
    trained,
    base,
    Math.max(...all.map((r) => r.completionIds.length)),
    o.seed,
  );
  stats.entropy = mean(gens.flatMap((g) => g.entropies));
  stats.completion_length = mean(gens.map((g) => g.tokens.length));
  if (reference) {
    const ref = await frozen.logprobs(
      reference,
      gens.map((g) => ({
        promptIds: o.records[g.prompt]!.prompt_ids,
        completionIds: g.tokens,
      })),
    );
    stats.kl_to_ref = klOnSamples(
      gens.map((g) => g.logprobs.reduce((a, b) => a + b, 0)),
      ref.map((x) => x.summed),
    );
    if (o.records.every((r) => r.prefs.length === r.completion_ids.length && r.prefs.length >= 2)) {
      const refAll = (await frozen.logprobs(reference, all)).map((x) => x.summed);
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

/**
 * One completion per record's prompt from `model` at temperature 1, within the position limit. A
 * LoRA round's model is its adapter on the base the round holds once: decoded where it lives.
 */
async function sampleOnce(
  runtime: Runtime,
  o: TrainRoundOptions,
  model: Model,
  base: SharedTensors | undefined,
  maxNewTokens: number,
  seed: number,
) {
  const onBase = base && model.adapter && model.weights === o.weights ? model.adapter : undefined;
  const runner = onBase
    ? await DecoderRunner.fromState(runtime, o.config, base!.source, onBase.config.targets)
    : await DecoderRunner.create(runtime, o.config, model.weights, model.adapter);
  const room = o.config.maxPositions - Math.max(...o.records.map((r) => r.prompt_ids.length));
  try {
    if (onBase) await runner.setAdapter('sample', onBase);
    return await generate(
      onBase ? runner.withAdapter('sample') : runner,
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
    await runner.release();
  }
}
