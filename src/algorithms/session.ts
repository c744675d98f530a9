/**
 * A training session that a client's own loop drives, in process (the trainer's TrainingService
 * serves it): losses on data, gradients accumulated by `forwardBackward` until `optimStep` applies
 * them, log-probs and the weights read back, the whole state snapshotted and restored. One state in
 * the worker — every weight, or (LoRA) an adapter over a base many sessions share. One compiled
 * forward/backward computes all three token losses from the shared log-probs and a per-call one-hot
 * picks the one whose gradient is taken, so switching token losses compiles nothing; each recipe's
 * pairwise loss is one more graph over the same state (`forwardBackwardRecords`).
 *
 * The token losses, each normalised by the batch's completion tokens N (so `cross_entropy` without
 * weights is exactly `duel train sft`'s mean token cross-entropy), with log-probs ℓ_t under the
 * current weights, token weights or advantages A_t and the sampler's log-probs q_t:
 *   cross_entropy        −Σ A_t ℓ_t / N                       (A_t: token_weights, 1 unless given)
 *   importance_sampling  −Σ exp(ℓ_t − q_t) A_t / N
 *   ppo                  −Σ min(r_t A_t, clip(r_t, 1 − ε, 1 + ε) A_t) / N,  r_t = exp(ℓ_t − q_t)
 */

import type {
  ComputeDtype,
  LossScaleSpec,
  OptimizerSpec,
  ParameterSource,
  PinnedSnapshot,
  ScheduleSpec,
  SharedTensors,
  StateReader,
  StepMetrics,
  TraceTarget,
  TrainingSnapshot,
} from '../engine/index.js';
import { type Graph, type Runtime, T, type Tensor, TrainingState, type WireTensor } from '../engine/index.js';
import { DuelError } from '../errors.js';
import { type CompletionBatch, type CompletionRecord, completionBatch } from '../models/batch.js';
import { castWeight } from '../models/common/precision.js';
import { rng } from '../models/common/rng.js';
import type { LlamaConfig } from '../models/llama/config.js';
import { fusedKernelsFor } from '../models/llama/decoder.js';
import { type CompletionLogprobs, LogprobRunner } from '../models/llama/logprob-runner.js';
import { sequenceLogprobs } from '../models/llama/logprobs.js';
import { type HostTensor, llamaParams } from '../models/llama/weights.js';
import { loraParams } from '../models/lora/adapter.js';
import { type LoraConfig, loraScale } from '../models/lora/config.js';
import { BatchInputs, parameterLookup } from './batch-inputs.js';
import { type RoundRecord, recipeFor } from './recipes/index.js';
import { RoundProgram, roundData, slotExamples, stepBatch } from './round-program.js';
import { checkRecords } from './train-round.js';

type Accumulate = (batch: Record<string, WireTensor>) => Promise<number>;

export const TOKEN_LOSSES = ['cross_entropy', 'importance_sampling', 'ppo'] as const;
export type TokenLoss = (typeof TOKEN_LOSSES)[number];

export interface TrainingDatum {
  promptIds: number[];
  completionIds: number[];
  /** One per completion token: cross_entropy's weights (default 1). */
  tokenWeights?: number[];
  /** One per completion token: importance_sampling's and ppo's advantages. */
  advantages?: number[];
  /** One per completion token: the sampler's log-probs (importance_sampling, ppo). */
  samplingLogprobs?: number[];
}

export interface TrainingSessionOptions {
  config: LlamaConfig;
  /** The trained parameters' starting values: the model's weights, or (with `lora`) the adapter's. */
  weights: Record<string, HostTensor>;
  /**
   * A full-weight session's π_ref (the pairwise losses' reference): its starting weights, read
   * when a loss first needs them. Without it the session keeps `weights` on the host for that; a
   * trainer passes a reader of the base's files instead, so a session holds no host copy.
   */
  reference?: () => Promise<Record<string, HostTensor>>;
  /**
   * `weights` move into the session's worker without a copy, and the caller's arrays are left
   * empty: for weights loaded or made only to start the session (a trainer's). A full-weight
   * session then reads π_ref from `reference`, which it must have.
   */
  handOver?: boolean;
  /** Train a LoRA adapter of this shape on the frozen base held in `base` (shared with other sessions). */
  lora?: { config: LoraConfig; base: SharedTensors };
  /** Give activation memory back after each run: many sessions per process (TrainingStateOptions.lowMemory). */
  lowMemory?: boolean;
  /** Steps write the state into its own buffers (TrainingStateOptions.inPlace). @default true */
  inPlace?: boolean;
  /**
   * Gradient checkpointing (DecoderInputs.checkpointing): the backward pass recomputes each
   * layer's activations instead of keeping them, for one more forward pass per step.
   */
  checkpointing?: boolean;
  /**
   * What the forward and backward passes compute in. float16 is mixed precision as in rounds:
   * float32 master weights and optimizer, the loss scaled dynamically (`lossScale`; the scale is
   * in every snapshot), overflowed optimizer steps skipped. ComputeLogprobs computes in it too.
   * @default 'float32'
   */
  dtype?: ComputeDtype;
  /** float16: how the loss is scaled (GradScaler's defaults). */
  lossScale?: LossScaleSpec;
  optimizer: OptimizerSpec;
  /** Global-norm clipping of each optim step's accumulated gradient; 0 disables. */
  gradClip: number;
  /** The learning rate an optimStep uses when the call names none. */
  lr: number;
}

interface Padded {
  padded: CompletionBatch;
}

/** A [B, T] feed of the padded batch's grid. */
const grid =
  <B extends Padded>(data: (b: B) => Float32Array | BigInt64Array, dtype: 'int64' | 'float32') =>
  (b: B) =>
    ({ dtype, dims: [b.padded.batch, b.padded.length], data: data(b) }) as WireTensor;

type Declare = (name: string, shape: number[]) => Tensor;

/**
 * The decoder's weight lookup: every weight a parameter, or (LoRA) the adapter's A and B
 * parameters over a frozen base; `adapter: false` reads the base alone (π_ref of a LoRA session).
 */
function modelWeights(
  cfg: LlamaConfig,
  param: Declare,
  frozen: Declare,
  { lora, adapter = true, dtype = 'float32' }: { lora?: LoraConfig; adapter?: boolean; dtype?: ComputeDtype },
) {
  // The state is float32 whatever the graph computes in: a half graph casts where it reads.
  const as =
    dtype === 'float32'
      ? (w: (name: string) => Tensor) => w
      : (w: (name: string) => Tensor) => (name: string) => castWeight(name, w(name), dtype);
  if (!lora) return { w: as(parameterLookup(llamaParams(cfg), param)) };
  const base = parameterLookup(llamaParams(cfg), frozen);
  if (!adapter) return { w: as(base) };
  const specs = loraParams(cfg, lora);
  const trained = parameterLookup(specs, param);
  const names = new Set(specs.map((p) => p.name));
  return {
    w: as((name: string) => (names.has(name) ? trained(name) : base(name))),
    lora: { scale: loraScale(lora), targets: new Set<string>(lora.targets) },
  };
}

/** The completion tokens' log-probs under the weights `model` looks up, from the padded grids. */
function completionLogprobs<B extends Padded>(
  cfg: LlamaConfig,
  x: BatchInputs<B>,
  model: ReturnType<typeof modelWeights>,
  graph: { fusedKernels: boolean; checkpointing?: boolean },
) {
  const mask = x.add(
    'target_mask',
    'float32',
    ['B', 'T'],
    grid((b) => b.padded.targetMask, 'float32'),
  );
  const { perToken } = sequenceLogprobs(cfg, model.w, {
    ...(model.lora ? { lora: model.lora } : {}),
    ...graph,
    inputIds: x.add(
      'input_ids',
      'int64',
      ['B', 'T'],
      grid((b) => b.padded.inputIds, 'int64'),
    ),
    attentionMask: x.add(
      'attention_mask',
      'int64',
      ['B', 'T'],
      grid((b) => b.padded.attentionMask, 'int64'),
    ),
    targets: x.add(
      'targets',
      'int64',
      ['B', 'T'],
      grid((b) => b.padded.targets, 'int64'),
    ),
    targetMask: mask,
  });
  return { perToken, mask };
}

/** What one forwardBackward feeds beside the token grid. */
interface Batch extends Padded {
  /** [B, T] aligned with the targets: A_t and q_t at each completion token's target position. */
  weights: Float32Array;
  sampling: Float32Array;
  pick: Record<TokenLoss, number>;
  clip: number;
}

/** Refuses data no loss can use, naming the datum and field; `loss` adds what that loss needs. */
function checkData(data: TrainingDatum[], loss?: TokenLoss): void {
  if (data.length === 0) throw DuelError.invalidArgument([{ field: 'data', description: 'is empty' }]);
  const refuse = (field: string, description: string) => {
    throw DuelError.invalidArgument([{ field, description }]);
  };
  data.forEach((d, i) => {
    const k = d.completionIds.length;
    if (k === 0) refuse(`data[${i}].completion_ids`, 'is empty');
    for (const [field, xs] of [
      ['token_weights', d.tokenWeights],
      ['advantages', d.advantages],
      ['sampling_logprobs', d.samplingLogprobs],
    ] as const) {
      if (xs && xs.length !== k)
        refuse(`data[${i}].${field}`, `has ${xs.length} values for ${k} completion tokens`);
      if (xs?.some((v) => !Number.isFinite(v)))
        refuse(`data[${i}].${field}`, 'holds a value that is not finite');
    }
    if (loss === 'cross_entropy' && d.advantages)
      refuse(
        `data[${i}].advantages`,
        'are for importance_sampling and ppo; cross_entropy reads token_weights',
      );
    if (loss !== undefined && loss !== 'cross_entropy') {
      if (d.tokenWeights) refuse(`data[${i}].token_weights`, `are cross_entropy's; ${loss} reads advantages`);
      if (!d.advantages || !d.samplingLogprobs)
        refuse(`data[${i}]`, `${loss} needs advantages and sampling_logprobs per token`);
    }
  });
}

export class TrainingSession {
  private constructor(
    readonly config: LlamaConfig,
    private readonly state: TrainingState,
    private readonly inputs: BatchInputs<Batch>,
    private readonly padId: number,
    private readonly runtime: Runtime,
    /** The starting weights (π_ref of the pairwise losses); unset for a LoRA session, whose π_ref is its base. */
    private readonly initial: (() => Promise<Record<string, HostTensor>>) | undefined,
    readonly lora: LoraConfig | undefined,
    /** How every graph over the state is built: its compute dtype, and checkpointing for training. */
    private readonly graph: { dtype: ComputeDtype; checkpointing: boolean },
  ) {}

  /** What the session's graphs compute in (the state itself is float32). */
  get dtype(): ComputeDtype {
    return this.graph.dtype;
  }

  /** Whether its steps recompute activations (TrainingSessionOptions.checkpointing). */
  get checkpointing(): boolean {
    return this.graph.checkpointing;
  }

  private changes = 0;

  /** π_ref for the pairwise losses, scored on first use. */
  private reference?: Promise<Pick<LogprobRunner, 'logprobs' | 'release'>>;
  /** Each pairwise loss's graph over the state, by recipe, hyper-parameters and slot shapes. */
  private readonly rounds = new Map<string, Promise<{ program: RoundProgram; run: Accumulate }>>();

  /** ComputeLogprobs' graph, over the state's parameters in place; compiled on first use. */
  private logprobs?: Promise<{ reader: StateReader; inputs: BatchInputs<Padded> }>;

  static async create(runtime: Runtime, o: TrainingSessionOptions): Promise<TrainingSession> {
    let inputs: BatchInputs<Batch> | undefined;
    const cfg = o.config;
    const dtype = o.dtype ?? 'float32';
    // Its weights moved into the worker, a full-weight session would have no π_ref.
    if (o.handOver && !o.lora && !o.reference)
      throw new Error('training session: handOver needs `reference` (π_ref) for a full-weight session');
    const scalar = (v: (b: Batch) => number) => (b: Batch) =>
      ({ dtype: 'float32', dims: [], data: Float32Array.of(v(b)) }) as WireTensor;
    const program = {
      dtype: 'float32' as const,
      build(g: Graph, param: Declare, frozen: Declare, target: TraceTarget): Tensor {
        const x = new BatchInputs<Batch>(g);
        inputs = x;
        const { perToken, mask } = completionLogprobs(
          cfg,
          x,
          modelWeights(cfg, param, frozen, { ...(o.lora ? { lora: o.lora.config } : {}), dtype }),
          { fusedKernels: fusedKernelsFor(target.provider), checkpointing: o.checkpointing ?? false },
        );
        const a = x.add(
          'weights',
          'float32',
          ['B', 'T'],
          grid((b) => b.weights, 'float32'),
        );
        const q = x.add(
          'sampling_logprobs',
          'float32',
          ['B', 'T'],
          grid((b) => b.sampling, 'float32'),
        );
        const eps = x.add(
          'clip',
          'float32',
          [],
          scalar((b) => b.clip),
        );
        const n = T.reduceSum(mask);
        const ratio = T.mul(T.exp(T.sub(perToken, q)), mask);
        const clipped = T.minimum(T.maximum(ratio, T.sub(1, eps)), T.add(1, eps));
        const losses: Record<TokenLoss, Tensor> = {
          cross_entropy: T.neg(T.reduceSum(T.mul(a, perToken))),
          importance_sampling: T.neg(T.reduceSum(T.mul(ratio, a))),
          ppo: T.neg(T.reduceSum(T.mul(T.minimum(T.mul(ratio, a), T.mul(clipped, a)), mask))),
        };
        // The unpicked losses are computed from the same log-probs and multiplied by 0: finite
        // for any input the datum checks allow, so their gradient is exactly 0.
        const total = TOKEN_LOSSES.map((k) =>
          T.mul(
            losses[k],
            x.add(
              `pick.${k}`,
              'float32',
              [],
              scalar((b) => b.pick[k]),
            ),
          ),
        ).reduce((s, t) => T.add(s, t));
        return T.div(total, n);
      },
    };
    const schedule: ScheduleSpec = { kind: 'constant', peakLr: o.lr, warmupSteps: 0, totalSteps: 1 };
    const state = await TrainingState.create(
      runtime,
      program,
      { optimizer: o.optimizer, gradClip: o.gradClip },
      schedule,
      o.weights,
      {
        accumulate: true,
        lowMemory: o.lowMemory ?? false,
        inPlace: o.inPlace ?? true,
        handOver: o.handOver ?? false,
        ...(o.lora ? { shared: o.lora.base } : {}),
        ...(dtype === 'float16' ? { lossScale: o.lossScale ?? {} } : {}),
      },
    );
    return new TrainingSession(
      cfg,
      state,
      inputs!,
      cfg.padTokenId ?? 0,
      runtime,
      o.lora ? undefined : (o.reference ?? (async () => o.weights)),
      o.lora?.config,
      { dtype, checkpointing: o.checkpointing ?? false },
    );
  }

  /** Adds the gradient of `loss` on `data` to the accumulators; returns the loss. */
  forwardBackward(loss: TokenLoss, data: TrainingDatum[], config: { clip?: number } = {}): Promise<number> {
    if (!TOKEN_LOSSES.includes(loss))
      throw DuelError.invalidArgument([
        { field: 'loss', description: `'${loss}' is not one of ${TOKEN_LOSSES.join(', ')}` },
      ]);
    checkData(data, loss);
    const clip = config.clip ?? 0.2;
    if (!(clip > 0 && clip < 1))
      throw DuelError.invalidArgument([
        { field: 'loss_config.clip', description: `must be in (0, 1), got ${clip}` },
      ]);
    const padded = completionBatch(data, this.padId, this.config.vocabSize);
    const size = padded.batch * padded.length;
    const weights = new Float32Array(size);
    const sampling = new Float32Array(size);
    // completionBatch puts completion token j of row r at target position promptLength − 1 + j.
    data.forEach((d, r) => {
      const start = r * padded.length + d.promptIds.length - 1;
      for (let j = 0; j < d.completionIds.length; j++) {
        weights[start + j] = (loss === 'cross_entropy' ? d.tokenWeights?.[j] : d.advantages?.[j]) ?? 1;
        sampling[start + j] = d.samplingLogprobs?.[j] ?? 0;
      }
    });
    const pick = Object.fromEntries(TOKEN_LOSSES.map((k) => [k, k === loss ? 1 : 0])) as Record<
      TokenLoss,
      number
    >;
    return this.state.forwardBackward(this.inputs.feeds({ padded, weights, sampling, pick, clip }));
  }

  /**
   * Adds the gradient of recipe `algo`'s loss on round records, as `duel train round` computes it
   * for one batch of them: π_t's log-probs are the session's current weights' (the weights the
   * round starts from, when the client steps once per round), π_ref's the session's starting
   * weights', and `seed` draws whatever rows the recipe samples.
   */
  async forwardBackwardRecords(
    algo: string,
    hparams: Record<string, unknown>,
    records: RoundRecord[],
    seed: number,
  ): Promise<number> {
    const recipe = recipeFor(algo, hparams);
    if (recipe.selfSamples)
      throw DuelError.invalidArgument([
        {
          field: 'loss',
          description: `${algo} samples from θ in the middle of a round; in a session the client samples (Sample) and trains on what it drew`,
        },
      ]);
    checkRecords(records, this.config.vocabSize, recipe.recipe.needsPrefs);
    const data = await roundData(recipe, records, rng(seed), async (model, rows) =>
      model === 'policy' ? this.scoreCurrent(rows) : (await this.referenceScorer()).logprobs([...rows]),
    );
    const examples = slotExamples(data);
    const key = JSON.stringify([
      algo,
      recipe.hp,
      Object.entries(examples).map(([slot, row]) => [
        slot,
        Object.entries(row.features).map(([k, v]) => [k, typeof v === 'number' ? 0 : v.length]),
      ]),
    ]);
    let loss = this.rounds.get(key);
    if (!loss) {
      const program = new RoundProgram(
        this.config,
        recipe,
        examples,
        this.lora ? { base: this.state.frozenShapes, adapter: this.lora } : undefined,
        this.graph,
      );
      loss = this.state.addLoss(this.runtime, program).then((run) => ({ program, run }));
      this.rounds.set(key, loss);
      loss.catch(() => this.rounds.delete(key));
    }
    const { program, run } = await loss;
    return run(
      program.feeds(
        stepBatch(
          data,
          records.map((_, i) => i),
          this.config,
        ).step,
      ),
    );
  }

  private referenceScorer() {
    this.reference ??= this.initial
      ? this.initial().then((weights) =>
          LogprobRunner.create(this.runtime, this.config, weights, undefined, { dtype: this.graph.dtype }),
        )
      : this.readLogprobs(false).then(({ reader, inputs }) => ({
          logprobs: async (rows: CompletionRecord[]) =>
            (await this.runReader(reader, inputs, rows)).map((perToken) => ({
              perToken,
              summed: perToken.reduce((a, b) => a + b, 0),
            })),
          release: () => reader.release(),
        }));
    return this.reference;
  }

  /** A log-prob graph over the state: with the adapter (the current policy), or the base alone. */
  private async readLogprobs(adapter: boolean) {
    let inputs: BatchInputs<Padded> | undefined;
    const reader = await this.state.reader(this.runtime, (g, param, frozen, target) => {
      inputs = new BatchInputs<Padded>(g);
      const model = modelWeights(this.config, param, frozen, {
        ...(this.lora ? { lora: this.lora } : {}),
        adapter,
        dtype: this.graph.dtype,
      });
      const fused = fusedKernelsFor(target.provider);
      return { logprobs: completionLogprobs(this.config, inputs, model, { fusedKernels: fused }).perToken };
    });
    return { reader, inputs: inputs! };
  }

  private async runReader(reader: StateReader, inputs: BatchInputs<Padded>, data: TrainingDatum[]) {
    const padded = completionBatch(data, this.padId, this.config.vocabSize);
    const out = (await reader.run(inputs.feeds({ padded }), ['logprobs'])).logprobs!.data as Float32Array;
    return data.map((d, r) => {
      const start = r * padded.length + d.promptIds.length - 1;
      return Array.from(out.subarray(start, start + d.completionIds.length));
    });
  }

  /** Summed and per-token log-probs of rows under the current weights. */
  private async scoreCurrent(rows: readonly TrainingDatum[]): Promise<CompletionLogprobs[]> {
    return (await this.computeLogprobs([...rows])).map((perToken) => ({
      perToken,
      summed: perToken.reduce((a, b) => a + b, 0),
    }));
  }

  /** Applies the accumulated gradient (the session's learning rate unless `lr` is given). */
  async optimStep(lr?: number): Promise<StepMetrics> {
    const m = await this.state.optimStep(lr);
    if (m.applied) this.changes++;
    return m;
  }

  /** Counts changes of the weights (steps, restores): what a cached decoder of them is keyed by. */
  get version(): number {
    return this.changes;
  }

  get steps(): number {
    return this.state.steps;
  }

  /** Per-token log-probs of each datum's completion under the current weights. */
  async computeLogprobs(data: TrainingDatum[]): Promise<number[][]> {
    checkData(data);
    this.logprobs ??= this.readLogprobs(true);
    const { reader, inputs } = await this.logprobs;
    return this.runReader(reader, inputs, data);
  }

  /** The whole state (weights, optimizer slots, pending gradients, step) on the host. */
  snapshot(): Promise<TrainingSnapshot> {
    return this.state.snapshot();
  }

  /** Where the weights live, for a decoder that reads them in place (DecoderRunner.fromState). */
  get parameterSource(): ParameterSource {
    return this.state.parameterSource;
  }

  /** The whole state as it is now, held without a copy for a later read (PinnedSnapshot). */
  pin(): Promise<PinnedSnapshot> {
    return this.state.pin();
  }

  /** `handOver`: the snapshot's buffers move into the worker without a copy (a snapshot read only for this). */
  async restore(s: TrainingSnapshot, o: { handOver?: boolean } = {}): Promise<void> {
    await this.state.restore(s, o);
    this.changes++;
  }

  async weights(): Promise<Record<string, HostTensor>> {
    return (await this.state.parameters()) as Record<string, HostTensor>;
  }

  async close(): Promise<void> {
    if (this.logprobs) await (await this.logprobs).reader.release();
    if (this.reference) await (await this.reference).release();
    await this.state.dispose();
  }
}
