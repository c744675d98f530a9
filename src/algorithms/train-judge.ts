/**
 * Judge training (docs/algorithms.md) on labelled pairs. A pairwise judge: binary cross-entropy on
 * each pair shown in both orders, softplus(−(C(x, y_w, y_l) − C(x, y_l, y_w))), so the learned logit
 * is antisymmetric in use. A Bradley-Terry reward model: the same loss on its rewards,
 * softplus(−(r(x, y_w) − r(x, y_l))), one pass per completion.
 */
import { type Graph, type Runtime, T, type Tensor, TrainingState, type WireTensor } from '../engine/index.js';
import { DuelError } from '../errors.js';
import { rng } from '../models/common/rng.js';
import type { JudgeConfig } from '../models/judge/config.js';
import { judgeLogits, judgeParams, pairBatch } from '../models/judge/model.js';
import type { HostTensor } from '../models/llama/weights.js';
import type { RewardConfig } from '../models/reward/config.js';
import { rewardBatch, rewardLogits, rewardParams } from '../models/reward/model.js';
import { BatchInputs, parameterLookup } from './batch-inputs.js';
import { judgeLoss } from './losses.js';
import { type LoopSettings, plan, type RoundMetrics, runSteps } from './steps.js';

export interface LabelledPair {
  prompt: number[];
  chosen: number[];
  rejected: number[];
}

export interface TrainJudgeOptions extends LoopSettings {
  config: JudgeConfig;
  weights: Record<string, HostTensor>;
  pairs: LabelledPair[];
}

export interface TrainRewardOptions extends LoopSettings {
  config: RewardConfig;
  weights: Record<string, HostTensor>;
  pairs: LabelledPair[];
}

/** The pair shown winner first, then loser first. */
const ORDERS = ['wl', 'lw'] as const;
type Order = (typeof ORDERS)[number];
type PairBatch = ReturnType<typeof pairBatch>;

export async function trainJudge(
  runtime: Runtime,
  o: TrainJudgeOptions,
): Promise<{ weights: Record<string, HostTensor>; metrics: RoundMetrics }> {
  if (o.pairs.length === 0)
    throw DuelError.invalidArgument([{ field: 'data', description: 'holds no pairs' }]);
  const cfg = o.config;
  let inputs: BatchInputs<Record<Order, PairBatch>> | undefined;
  const program = {
    dtype: 'float32' as const,
    build(g: Graph, param: (name: string, shape: number[]) => Tensor) {
      const declared = new BatchInputs<Record<Order, PairBatch>>(g);
      inputs = declared;
      const w = parameterLookup(judgeParams(cfg), param);
      const [wl, lw] = ORDERS.map((order) => {
        const dims = (b: PairBatch) => [b.n, b.length];
        return judgeLogits(cfg, w, {
          inputIds: declared.add(`${order}/input_ids`, 'int64', ['R', `T_${order}`], (b) => ({
            dtype: 'int64',
            dims: dims(b[order]),
            data: b[order].inputIds,
          })),
          attentionMask: declared.add(`${order}/attention_mask`, 'int64', ['R', `T_${order}`], (b) => ({
            dtype: 'int64',
            dims: dims(b[order]),
            data: b[order].attentionMask,
          })),
          markers: declared.add(`${order}/markers`, 'int64', ['R', 3], (b) => ({
            dtype: 'int64',
            dims: [b[order].n, 3],
            data: b[order].markers,
          })),
        });
      });
      return T.mean(judgeLoss(wl!, lw!));
    },
  };
  return trainOnPairs(runtime, o, program, (pairs) => {
    const padded = {
      wl: pairBatch(
        cfg,
        pairs.map((p) => ({ prompt: p.prompt, first: p.chosen, second: p.rejected })),
      ),
      lw: pairBatch(
        cfg,
        pairs.map((p) => ({ prompt: p.prompt, first: p.rejected, second: p.chosen })),
      ),
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
  if (o.pairs.length === 0)
    throw DuelError.invalidArgument([{ field: 'data', description: 'holds no pairs' }]);
  const cfg = o.config;
  type Batch = ReturnType<typeof rewardBatch>;
  const SIDES = ['chosen', 'rejected'] as const;
  let inputs: BatchInputs<Record<(typeof SIDES)[number], Batch>> | undefined;
  const program = {
    dtype: 'float32' as const,
    build(g: Graph, param: (name: string, shape: number[]) => Tensor) {
      const declared = new BatchInputs<Record<(typeof SIDES)[number], Batch>>(g);
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
        }),
      );
      return T.mean(judgeLoss(chosen!, rejected!));
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
    };
    const tokens = SIDES.reduce(
      (n, side) => n + Number(batch[side].attentionMask.reduce((a, x) => a + x, 0n)),
      0,
    );
    return { feeds: inputs!.feeds(batch), tokens };
  });
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
