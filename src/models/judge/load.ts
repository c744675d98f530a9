/**
 * A judge directory, whatever it holds: duel's PairRM-style judge (model_type duel_pairrm, weights
 * or an external ONNX graph), the published PairRM (DebertaV2PairRM), or a Bradley-Terry reward
 * model (`*ForSequenceClassification`). All answer the same K×K comparison and ranking, so the
 * scorer, `duel judge compare` and the testbed take any without knowing which.
 */
import { join, resolve } from 'node:path';
import type { Runtime } from '../../engine/index.js';
import { parameterCount } from '../llama/weights.js';
import { readConfigJson } from '../model-dir.js';
import { isPairRMConfig } from '../pairrm/config.js';
import { pairrmParams } from '../pairrm/model.js';
import { PairRMRunner, readPairRMConfig, readPairRMWeights } from '../pairrm/runner.js';
import { isRewardConfig } from '../reward/config.js';
import { rewardParams } from '../reward/model.js';
import { RewardRunner } from '../reward/runner.js';
import { judgeParams } from './model.js';
import { JudgeRunner } from './runner.js';

/** What every judge offers. */
export type Judge = Pick<JudgeRunner, 'compare' | 'rank' | 'pairProbs' | 'release'>;

export interface LoadedJudgeModel {
  judge: Judge;
  kind: 'pairwise' | 'reward';
  parameters: number;
}

export async function loadJudgeDir(runtime: Runtime, dirPath: string): Promise<LoadedJudgeModel> {
  const dir = resolve(dirPath);
  const json = readConfigJson(dir);
  if (isPairRMConfig(json)) {
    const cfg = readPairRMConfig(dir, json);
    const judge = await PairRMRunner.create(runtime, cfg, readPairRMWeights(dir, cfg));
    return { judge, kind: 'pairwise', parameters: parameterCount(pairrmParams(cfg)) };
  }
  if (isRewardConfig(json)) {
    const judge = await RewardRunner.fromDir(runtime, dir, json, join(dir, 'config.json'));
    return { judge, kind: 'reward', parameters: parameterCount(rewardParams(judge.config)) };
  }
  const judge = await JudgeRunner.fromDir(runtime, dir);
  return { judge, kind: 'pairwise', parameters: parameterCount(judgeParams(judge.config)) };
}
