/**
 * A round's training graph: θ's log-probs of every slot's rows and the recipe's loss over them.
 * Each input is declared once, in `slotLogps`, with the function that fills it from a step's
 * batch (the slot's padded rows, the frozen log-probs the recipe declared, its per-row features),
 * so graph and feeds cannot disagree.
 */
import type { ComputeDtype, Graph, Tensor, TraceTarget, TypedArray, WireTensor } from '../engine/index.js';
import { T } from '../engine/index.js';
import { DuelError } from '../errors.js';
import { type CompletionBatch, completionBatch } from '../models/batch.js';
import { castWeight } from '../models/common/precision.js';
import type { LlamaConfig } from '../models/llama/config.js';
import { fusedKernelsFor } from '../models/llama/decoder.js';
import type { CompletionLogprobs } from '../models/llama/logprob-runner.js';
import { sequenceLogprobs } from '../models/llama/logprobs.js';
import { llamaParams } from '../models/llama/weights.js';
import { type Adapter, loraParams } from '../models/lora/adapter.js';
import { loraScale } from '../models/lora/config.js';
import { BatchInputs, parameterLookup, rowVector } from './batch-inputs.js';
import type { ConfiguredRecipe, RoundRecord, Row, SlotLogps } from './recipes/index.js';
import { FROZEN, type Frozen } from './recipes/recipe.js';

/** The model a frozen input is computed from. */
export type FrozenModel = (typeof FROZEN)[Frozen]['model'];

/** One slot's rows, per record, and their log-probs under each model a frozen input reads. */
export interface SlotData {
  rows: Row[][];
  scored: Partial<Record<FrozenModel, CompletionLogprobs[][]>>;
}

/** What one step feeds a slot: its rows, padded, and their frozen log-probs. */
export interface SlotBatch {
  rows: Row[];
  padded: CompletionBatch;
  scored: Partial<Record<FrozenModel, CompletionLogprobs[]>>;
}
export type StepBatch = Record<string, SlotBatch>;

/** The models whose log-probs a recipe's frozen inputs read. */
export const frozenModels = (recipe: ConfiguredRecipe): FrozenModel[] => [
  ...new Set(recipe.recipe.frozen.map((z) => FROZEN[z].model)),
];

/** Log-probs of rows under a frozen model. */
export type ScoreRows = (model: FrozenModel, rows: readonly Row[]) => Promise<CompletionLogprobs[]>;

/** A slot's rows of every record (the same count per record) with their frozen log-probs. */
export async function scoreSlot(
  rows: Row[][],
  needed: readonly FrozenModel[],
  score: ScoreRows,
): Promise<SlotData> {
  const m = rows[0]!.length;
  const scored: SlotData['scored'] = {};
  for (const model of needed) {
    const all = await score(model, rows.flat());
    scored[model] = rows.map((_, i) => all.slice(i * m, (i + 1) * m));
  }
  return { rows, scored };
}

/** The records as the recipe's slots, scored; every record must give each slot the same rows. */
export async function roundData(
  recipe: ConfiguredRecipe,
  records: readonly RoundRecord[],
  draw: () => number,
  score: ScoreRows,
): Promise<Record<string, SlotData>> {
  const needed = frozenModels(recipe);
  const perRecord = records.map((r) => recipe.rows(r, draw));
  const data: Record<string, SlotData> = {};
  for (const slot of Object.keys(perRecord[0]!)) {
    const rows = perRecord.map((rec) => rec[slot] ?? []);
    if (new Set(rows.map((r) => r.length)).size !== 1)
      throw DuelError.invalidArgument([
        {
          field: 'data',
          description: `${recipe.recipe.name}: every record must give the same number of rows (mixed K?)`,
        },
      ]);
    data[slot] = await scoreSlot(rows, needed, score);
  }
  return data;
}

/** One step's batch: records `batch`'s rows of every slot, padded, with their frozen log-probs. */
export function stepBatch(
  data: Record<string, SlotData>,
  batch: readonly number[],
  cfg: LlamaConfig,
): { step: StepBatch; tokens: number } {
  const step: StepBatch = {};
  let tokens = 0;
  for (const [slot, d] of Object.entries(data)) {
    const rows = batch.flatMap((i) => d.rows[i]!);
    const scored: SlotBatch['scored'] = {};
    for (const model of Object.keys(d.scored) as FrozenModel[])
      scored[model] = batch.flatMap((i) => d.scored[model]![i]!);
    const padded = completionBatch(rows, cfg.padTokenId ?? 0, cfg.vocabSize);
    step[slot] = { rows, padded, scored };
    tokens += rows.reduce((s, r) => s + r.promptIds.length + r.completionIds.length, 0);
  }
  return { step, tokens };
}

/** One row of each slot: what a RoundProgram needs to know of the slots' features. */
export const slotExamples = (data: Record<string, SlotData>): Record<string, Row> =>
  Object.fromEntries(Object.entries(data).map(([slot, d]) => [slot, d.rows[0]![0]!]));

export interface RoundProgramOptions {
  /** What the forward and backward passes compute in (the parameters stay float32). */
  dtype?: ComputeDtype;
  /** Gradient checkpointing of the decoder's layers (DecoderInputs.checkpointing). */
  checkpointing?: boolean;
}

/**
 * The TrainProgram of a round: built once by TrainingState, then asked for each step's feeds. Its
 * parameters (and a LoRA base) are float32; `compute` float16 casts them for the forward and
 * backward passes (mixed precision: float32 master weights, updated in float32), and the state
 * must then scale its loss (TrainingStateOptions.lossScale).
 */
export class RoundProgram {
  readonly dtype = 'float32' as const;
  private inputs: BatchInputs<StepBatch> | undefined;

  constructor(
    private readonly cfg: LlamaConfig,
    private readonly recipe: ConfiguredRecipe,
    /** One row of each slot, for the names and widths of its features. */
    private readonly examples: Record<string, Row>,
    /**
     * Train a LoRA adapter of this shape on these frozen base weights: the base is a frozen input
     * (kept in the worker's state, read every step), and only the adapter's A and B are parameters.
     */
    private readonly lora?: {
      base: Readonly<Record<string, { dims: readonly number[] }>>;
      adapter: Adapter['config'];
    },
    private readonly options: RoundProgramOptions = {},
  ) {}

  private get compute(): ComputeDtype {
    return this.options.dtype ?? 'float32';
  }

  build(
    g: Graph,
    param: (name: string, shape: number[]) => Tensor,
    frozenInput: (name: string, shape: number[]) => Tensor,
    target: TraceTarget,
  ): Tensor {
    const inputs = new BatchInputs<StepBatch>(g);
    this.inputs = inputs;
    const lora = this.lora;
    let w = parameterLookup(lora ? loraParams(this.cfg, lora.adapter) : llamaParams(this.cfg), param);
    if (lora) {
      const trained = w;
      const frozen = new Map<string, Tensor>();
      // The base is read from the worker's state every step, never written: one copy there.
      w = (name) => {
        const base = lora.base[name];
        if (!base) return trained(name);
        let t = frozen.get(name);
        if (!t) {
          t = frozenInput(name, [...base.dims]);
          frozen.set(name, t);
        }
        return t;
      };
    }
    if (this.compute !== 'float32') {
      const master = w;
      w = (name) => castWeight(name, master(name), this.compute);
    }
    const adapter = lora
      ? { scale: loraScale(lora.adapter), targets: new Set<string>(lora.adapter.targets) }
      : undefined;
    const slots = Object.fromEntries(
      Object.entries(this.examples).map(([slot, example]) => [
        slot,
        slotLogps(inputs, this.cfg, w, slot, example, this.recipe.recipe.frozen, {
          lora: adapter,
          fusedKernels: fusedKernelsFor(target.provider),
          checkpointing: this.options.checkpointing ?? false,
        }),
      ]),
    );
    return T.mean(this.recipe.loss(slots));
  }

  feeds(batch: StepBatch): Record<string, WireTensor> {
    if (!this.inputs) throw new Error('RoundProgram.feeds before build');
    return this.inputs.feeds(batch);
  }
}

function slotLogps(
  inputs: BatchInputs<StepBatch>,
  cfg: LlamaConfig,
  w: (name: string) => Tensor,
  slot: string,
  example: Row,
  frozen: readonly Frozen[],
  model: {
    lora: { scale: number; targets: ReadonlySet<string> } | undefined;
    fusedKernels: boolean;
    checkpointing: boolean;
  },
): SlotLogps {
  // Every slot has the same rows per record, so one symbol R serves all; lengths differ.
  const [R, T_] = ['R', `T_${slot}`];
  const of = (b: StepBatch) => b[slot]!;
  const grid = (name: string, dtype: 'int64' | 'float32', pick: (p: CompletionBatch) => TypedArray) =>
    inputs.add(`${slot}/${name}`, dtype, [R, T_], (b) => {
      const p = of(b).padded;
      return { dtype, dims: [p.batch, p.length], data: pick(p) };
    });
  const mask = grid('target_mask', 'float32', (p) => p.targetMask);
  const { summed, perToken } = sequenceLogprobs(cfg, w, {
    inputIds: grid('input_ids', 'int64', (p) => p.inputIds),
    attentionMask: grid('attention_mask', 'int64', (p) => p.attentionMask),
    targets: grid('targets', 'int64', (p) => p.targets),
    targetMask: mask,
    ...(model.lora ? { lora: model.lora } : {}),
    fusedKernels: model.fusedKernels,
    checkpointing: model.checkpointing,
  });
  const frozenInputs = Object.fromEntries(
    frozen.map((z) => {
      const { model, per } = FROZEN[z];
      const scored = (b: StepBatch) => of(b).scored[model]!;
      return [
        z,
        per === 'row'
          ? inputs.add(`${slot}/${z}`, 'float32', [R], (b) => rowVector(scored(b).map((x) => x.summed)))
          : inputs.add(`${slot}/${z}`, 'float32', [R, T_], (b) => tokenGrid(of(b), scored(b))),
      ];
    }),
  );
  // A feature becomes a graph input when the loss first reads it, so unread ones cost nothing.
  const features: Record<string, Tensor> = {};
  for (const [name, value] of Object.entries(example.features)) {
    let tensor: Tensor | undefined;
    const width = typeof value === 'number' ? undefined : value.length;
    Object.defineProperty(features, name, {
      enumerable: true,
      get: () => (tensor ??= featureInput(inputs, slot, name, width)),
    });
  }
  return { theta: summed, tokTheta: perToken, mask, features, ...frozenInputs } as SlotLogps;
}

/** A per-row feature: one number per row as [R], or a vector of `width` per row as [R, width]. */
function featureInput(inputs: BatchInputs<StepBatch>, slot: string, name: string, width: number | undefined) {
  return inputs.add(`${slot}/feature.${name}`, 'float32', width === undefined ? ['R'] : ['R', width], (b) => {
    const rows = b[slot]!.rows;
    if (width === undefined) return rowVector(rows.map((r) => r.features[name] as number));
    const data = new Float32Array(rows.length * width);
    rows.forEach((r, i) => {
      const v = r.features[name] as readonly number[];
      if (v.length !== width)
        throw DuelError.invalidArgument([
          {
            field: 'data',
            description: `slot ${slot}: feature '${name}' has ${v.length} values on one row, ${width} on another`,
          },
        ]);
      data.set(v, i * width);
    });
    return { dtype: 'float32', dims: [rows.length, width], data };
  });
}

/** Per-token frozen log-probs on the padded grid: completion token k sits at position promptLength − 1 + k. */
function tokenGrid(b: SlotBatch, scored: CompletionLogprobs[]): WireTensor {
  const { batch, length } = b.padded;
  const data = new Float32Array(batch * length);
  b.rows.forEach((r, n) => {
    data.set(scored[n]!.perToken, n * length + r.promptIds.length - 1);
  });
  return { dtype: 'float32', dims: [batch, length], data };
}
