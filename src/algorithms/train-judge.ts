/**
 * Judge training (ALGORITHMS.md): binary cross-entropy on labelled pairs shown in both orders,
 * softplus(−(C(x, y_w, y_l) − C(x, y_l, y_w))), so the learned logit is antisymmetric in use.
 */
import { type Graph, type Runtime, T, type Tensor, TrainingState, type WireTensor } from '../engine/index.js';
import { rng } from '../models/common/rng.js';
import type { JudgeConfig } from '../models/judge/config.js';
import { judgeLogits, judgeParams, pairBatch } from '../models/judge/model.js';
import type { HostTensor } from '../models/llama/weights.js';
import { DuelError } from '../platform/errors.js';
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

const ORDERS = ['wl', 'lw'] as const;

export async function trainJudge(
  runtime: Runtime,
  o: TrainJudgeOptions,
): Promise<{ weights: Record<string, HostTensor>; metrics: RoundMetrics }> {
  if (o.pairs.length === 0)
    throw DuelError.invalidArgument([{ field: 'data', description: 'holds no pairs' }]);
  const cfg = o.config;
  const shapes = new Map(judgeParams(cfg).map((p) => [p.name, p.shape]));
  const program = {
    dtype: 'float32' as const,
    build(g: Graph, param: (name: string, shape: number[]) => Tensor) {
      const params = new Map<string, Tensor>();
      const w = (name: string) => {
        if (!params.has(name)) params.set(name, param(name, shapes.get(name)!));
        return params.get(name)!;
      };
      const [wl, lw] = ORDERS.map((order) =>
        judgeLogits(cfg, w, {
          inputIds: g.input(`${order}/input_ids`, 'int64', ['R', `T_${order}`]),
          attentionMask: g.input(`${order}/attention_mask`, 'int64', ['R', `T_${order}`]),
          markers: g.input(`${order}/markers`, 'int64', ['R', 3]),
        }),
      );
      return T.mean(judgeLoss(wl!, lw!));
    },
  };
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
      feeds(batch) {
        const chosen = batch.map((i) => o.pairs[i]!);
        const feeds: Record<string, WireTensor> = {};
        let tokens = 0;
        for (const order of ORDERS) {
          const b = pairBatch(
            cfg,
            chosen.map((p) =>
              order === 'wl'
                ? { prompt: p.prompt, first: p.chosen, second: p.rejected }
                : { prompt: p.prompt, first: p.rejected, second: p.chosen },
            ),
          );
          feeds[`${order}/input_ids`] = { dtype: 'int64', dims: [b.n, b.length], data: b.inputIds };
          feeds[`${order}/attention_mask`] = { dtype: 'int64', dims: [b.n, b.length], data: b.attentionMask };
          feeds[`${order}/markers`] = { dtype: 'int64', dims: [b.n, 3], data: b.markers };
          tokens += Number(b.attentionMask.reduce((a, x) => a + x, 0n));
        }
        return { feeds, tokens };
      },
    });
  } finally {
    await state.dispose();
  }
}
