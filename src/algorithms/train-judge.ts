/**
 * Judge training (docs/algorithms.md) on labelled pairs. A pairwise judge (duel's own or the
 * published PairRM's shape, through `PairwiseJudge`): binary cross-entropy on the pair shown in
 * both orders, z = C(x, y_w, y_l) − C(x, y_l, y_w), so the learned logit is antisymmetric in use.
 * A Bradley-Terry reward model: the same loss on its rewards, z = r(x, y_w) − r(x, y_l), one pass
 * per completion. A pair's label is P(y_w ≻ y_l): 1 for a winner and a loser, a share in between
 * where the data has one (`judgeLoss`).
 */
import {
  type Graph,
  type Runtime,
  type Shape,
  T,
  type Tensor,
  type TraceTarget,
  TrainingState,
  type WireTensor,
} from '../engine/index.js';
import { DuelError } from '../errors.js';
import { rng } from '../models/common/rng.js';
import type { JudgeConfig } from '../models/judge/config.js';
import { judgeLogits, judgeParams, type PairInput, pairBatch } from '../models/judge/model.js';
import { fusedKernelsFor } from '../models/llama/decoder.js';
import type { HostTensor, ParamSpec } from '../models/llama/weights.js';
import type { PairRMConfig } from '../models/pairrm/config.js';
import { pairrmBatch, pairrmLogits, pairrmParams } from '../models/pairrm/model.js';
import type { RewardConfig } from '../models/reward/config.js';
import { rewardBatch, rewardLogits, rewardParams } from '../models/reward/model.js';
import { BatchInputs, parameterLookup, rowVector } from './batch-inputs.js';
import { judgeLoss } from './losses.js';
import { type LoopSettings, plan, type RoundMetrics, runSteps } from './steps.js';

export interface LabelledPair {
  prompt: number[];
  chosen: number[];
  rejected: number[];
  /** P(chosen ≻ rejected) in [0, 1]: 1 (the default) for a drawn winner, a share for soft labels. */
  label?: number;
}

/** The labels of a batch as the loss reads them, [R]. */
const labelsOf = (pairs: LabelledPair[]) => rowVector(pairs.map((p) => p.label ?? 1));

/** Refuses a label outside [0, 1], naming the pair. */
function checkLabels(pairs: LabelledPair[]): void {
  const bad = pairs.findIndex((p) => p.label !== undefined && !(p.label >= 0 && p.label <= 1));
  if (bad >= 0)
    throw DuelError.invalidArgument([
      { field: `pairs[${bad}].label`, description: `is ${pairs[bad]!.label}; a preference is in [0, 1]` },
    ]);
}

/**
 * What judge training needs of a pairwise judge: its parameters, how pairs become a padded batch,
 * and its logit graph over inputs declared through `input` (each with its batch fill).
 */
export interface PairwiseJudge<B extends { n: number; length: number; attentionMask: BigInt64Array }> {
  params: ParamSpec[];
  batch(pairs: PairInput[]): B;
  logits(
    w: (name: string) => Tensor,
    input: (name: string, shape: Shape, fill: (b: B) => WireTensor) => Tensor,
    order: string,
    /** ONNX Runtime's fused kernels where the judge has them (DecoderInputs.fusedKernels). */
    fusedKernels: boolean,
  ): Tensor;
}

/** duel's own PairRM-style judge (model_type duel_pairrm). */
export function duelJudge(cfg: JudgeConfig): PairwiseJudge<ReturnType<typeof pairBatch>> {
  return {
    params: judgeParams(cfg),
    batch: (pairs) => pairBatch(cfg, pairs),
    logits: (w, input, order, fusedKernels) =>
      judgeLogits(cfg, w, { ...pairInputs(input, order), fusedKernels }),
  };
}

/** The published PairRM's shape (DebertaV2PairRM), with its relative-position indices per batch. */
export function pairrmJudge(cfg: PairRMConfig): PairwiseJudge<ReturnType<typeof pairrmBatch>> {
  const square =
    (data: (b: ReturnType<typeof pairrmBatch>) => BigInt64Array) => (b: ReturnType<typeof pairrmBatch>) =>
      ({ dtype: 'int64', dims: [b.length, b.length], data: data(b) }) as WireTensor;
  return {
    params: pairrmParams(cfg),
    batch: (pairs) => pairrmBatch(cfg, pairs),
    logits: (w, input, order, fusedKernels) =>
      pairrmLogits(cfg, w, {
        ...pairInputs(input, order),
        fusedKernels,
        ...(cfg.encoder.relativeAttention
          ? {
              c2pIndex: input(
                'c2p_index',
                [`T_${order}`, `T_${order}`],
                square((b) => b.c2p),
              ),
              p2cIndex: input(
                'p2c_index',
                [`T_${order}`, `T_${order}`],
                square((b) => b.p2c),
              ),
            }
          : {}),
      }),
  };
}

type PairBatchLike = {
  n: number;
  length: number;
  inputIds: BigInt64Array;
  attentionMask: BigInt64Array;
  markers: BigInt64Array;
};

/** The inputs both pairwise judges read: the pair sequences, their mask and the marker positions. */
function pairInputs<B extends PairBatchLike>(
  input: (name: string, shape: Shape, fill: (b: B) => WireTensor) => Tensor,
  order: string,
) {
  const grid = (data: (b: B) => BigInt64Array) => (b: B) =>
    ({ dtype: 'int64', dims: [b.n, b.length], data: data(b) }) as WireTensor;
  return {
    inputIds: input(
      'input_ids',
      ['R', `T_${order}`],
      grid((b) => b.inputIds),
    ),
    attentionMask: input(
      'attention_mask',
      ['R', `T_${order}`],
      grid((b) => b.attentionMask),
    ),
    markers: input('markers', ['R', 3], (b) => ({ dtype: 'int64', dims: [b.n, 3], data: b.markers })),
  };
}

export interface TrainJudgeOptions<B extends { n: number; length: number; attentionMask: BigInt64Array }>
  extends LoopSettings {
  judge: PairwiseJudge<B>;
  weights: Record<string, HostTensor>;
  pairs: LabelledPair[];
}

export interface TrainRewardOptions extends LoopSettings {
  config: RewardConfig;
  weights: Record<string, HostTensor>;
  pairs: LabelledPair[];
}

type Declare = (name: string, shape: number[]) => Tensor;

/** The pair shown winner first, then loser first. */
const ORDERS = ['wl', 'lw'] as const;
type Order = (typeof ORDERS)[number];

export async function trainJudge<B extends { n: number; length: number; attentionMask: BigInt64Array }>(
  runtime: Runtime,
  o: TrainJudgeOptions<B>,
): Promise<{ weights: Record<string, HostTensor>; metrics: RoundMetrics }> {
  checkPairs(o.pairs);
  let inputs: BatchInputs<Record<Order, B> & { label: WireTensor }> | undefined;
  const program = {
    dtype: 'float32' as const,
    build(g: Graph, param: Declare, _frozen: Declare, target: TraceTarget) {
      const declared = new BatchInputs<Record<Order, B> & { label: WireTensor }>(g);
      inputs = declared;
      const w = parameterLookup(o.judge.params, param);
      const [wl, lw] = ORDERS.map((order) =>
        o.judge.logits(
          w,
          (name, shape, fill) => declared.add(`${order}/${name}`, 'int64', shape, (b) => fill(b[order])),
          order,
          fusedKernelsFor(target.provider),
        ),
      );
      const label = declared.add('label', 'float32', ['R'], (b) => b.label);
      return T.mean(judgeLoss(T.sub(wl!, lw!), label));
    },
  };
  return trainOnPairs(runtime, o, program, (pairs) => {
    const padded = {
      wl: o.judge.batch(pairs.map((p) => ({ prompt: p.prompt, first: p.chosen, second: p.rejected }))),
      lw: o.judge.batch(pairs.map((p) => ({ prompt: p.prompt, first: p.rejected, second: p.chosen }))),
      label: labelsOf(pairs),
    };
    const tokens = ORDERS.reduce(
      (n, order) => n + Number(padded[order].attentionMask.reduce((a, x) => a + x, 0n)),
      0,
    );
    return { feeds: inputs!.feeds(padded), tokens };
  });
}

/** A Bradley-Terry reward model trained on labelled pairs: softplus(−(r_w − r_l)). */
export async function trainRewardModel(
  runtime: Runtime,
  o: TrainRewardOptions,
): Promise<{ weights: Record<string, HostTensor>; metrics: RoundMetrics }> {
  checkPairs(o.pairs);
  const cfg = o.config;
  type Batch = ReturnType<typeof rewardBatch>;
  const SIDES = ['chosen', 'rejected'] as const;
  type Sides = Record<(typeof SIDES)[number], Batch> & { label: WireTensor };
  let inputs: BatchInputs<Sides> | undefined;
  const program = {
    dtype: 'float32' as const,
    build(g: Graph, param: Declare, _frozen: Declare, target: TraceTarget) {
      const declared = new BatchInputs<Sides>(g);
      inputs = declared;
      const w = parameterLookup(rewardParams(cfg), param);
      const [chosen, rejected] = SIDES.map((side) =>
        rewardLogits(cfg, w, {
          inputIds: declared.add(`${side}/input_ids`, 'int64', ['R', `T_${side}`], (b) => ({
            dtype: 'int64',
            dims: [b[side].n, b[side].length],
            data: b[side].inputIds,
          })),
          attentionMask: declared.add(`${side}/attention_mask`, 'int64', ['R', `T_${side}`], (b) => ({
            dtype: 'int64',
            dims: [b[side].n, b[side].length],
            data: b[side].attentionMask,
          })),
          last: declared.add(`${side}/last`, 'int64', ['R'], (b) => ({
            dtype: 'int64',
            dims: [b[side].n],
            data: b[side].last,
          })),
          fusedKernels: fusedKernelsFor(target.provider),
        }),
      );
      const label = declared.add('label', 'float32', ['R'], (b) => b.label);
      return T.mean(judgeLoss(T.sub(chosen!, rejected!), label));
    },
  };
  if (cfg.backbone.padTokenId === undefined && o.batchSize > 1)
    throw DuelError.invalidArgument([
      {
        field: 'batch_size',
        description: `is ${o.batchSize}; a reward model without pad_token_id trains one pair per step (batch_size 1)`,
      },
    ]);
  return trainOnPairs(runtime, o, program, (pairs) => {
    const batch = {
      chosen: rewardBatch(
        cfg,
        pairs.map((p) => ({ prompt: p.prompt, completion: p.chosen })),
      ),
      rejected: rewardBatch(
        cfg,
        pairs.map((p) => ({ prompt: p.prompt, completion: p.rejected })),
      ),
      label: labelsOf(pairs),
    };
    const tokens = SIDES.reduce(
      (n, side) => n + Number(batch[side].attentionMask.reduce((a, x) => a + x, 0n)),
      0,
    );
    return { feeds: inputs!.feeds(batch), tokens };
  });
}

function checkPairs(pairs: LabelledPair[]): void {
  if (pairs.length === 0) throw DuelError.invalidArgument([{ field: 'data', description: 'holds no pairs' }]);
  checkLabels(pairs);
}

/** The optimisation loop both kinds share: batches of pairs, `feeds` turns one into graph inputs. */
async function trainOnPairs(
  runtime: Runtime,
  o: LoopSettings & { weights: Record<string, HostTensor>; pairs: LabelledPair[] },
  program: Parameters<typeof TrainingState.create>[1],
  feeds: (pairs: LabelledPair[]) => { feeds: Record<string, WireTensor>; tokens: number },
): Promise<{ weights: Record<string, HostTensor>; metrics: RoundMetrics }> {
  const state = await TrainingState.create(
    runtime,
    program,
    { optimizer: o.optimizer, gradClip: o.gradClip },
    plan(o, o.pairs.length).schedule,
    o.weights,
  );
  try {
    return await runSteps(state, {
      algo: 'judge',
      records: o.pairs.length,
      batchSize: o.batchSize,
      ...(o.steps !== undefined ? { steps: o.steps } : {}),
      ...(o.epochs !== undefined ? { epochs: o.epochs } : {}),
      draw: rng(o.seed),
      ...(o.onStep ? { onStep: o.onStep } : {}),
      feeds: (batch) => feeds(batch.map((i) => o.pairs[i]!)),
    });
  } finally {
    await state.dispose();
  }
}
