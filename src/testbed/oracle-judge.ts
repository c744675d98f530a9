/**
 * The `oracle` judge: P* itself behind the same interface as the learned PairRM-style judge, so
 * the scorer serves it under the Scorer contract and a run can use it as the control. A judge
 * directory whose config.json says `"model_type": "duel_oracle"` holds the game's parameters. The
 * scorer loads it as a judge module (`judgeTypes`, src/models/judge/judge-type.ts): the demo
 * starts its scorer with this file in `judges.modules`.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DuelError } from '../errors.js';
import type { JudgeType } from '../models/judge/judge-type.js';
import { fromLogits, orderByScores, type Preferences } from '../models/judge/runner.js';
import { readConfigJson } from '../models/model-dir.js';
import { builtFile } from '../platform/paths.js';
import { type GameConfig, parseGame, targetsOf, trueLogit } from './game.js';

export const ORACLE_MODEL_TYPE = 'duel_oracle';

export class OracleJudge {
  constructor(readonly game: GameConfig) {}

  static fromDir(dir: string): OracleJudge {
    const cfg = readConfigJson(dir) as { model_type?: string; game?: Record<string, unknown> };
    if (cfg.model_type !== ORACLE_MODEL_TYPE)
      throw DuelError.invalidArgument([
        { field: `${dir}/config.json: model_type`, description: `must be ${ORACLE_MODEL_TYPE}` },
      ]);
    return new OracleJudge(parseGame(cfg.game ?? {}));
  }

  /**
   * C[i][j] = ½·logit P*(y_i ≻ y_j): the logit is antisymmetric, so the pairwise probability
   * σ(C_ij − C_ji) the scorer computes is exactly P*.
   */
  async compare(prompt: number[], candidates: number[][]): Promise<Preferences> {
    const targets = targetsOf(prompt);
    const logits = candidates.map((y, i) =>
      candidates.map((y2, j) => (i === j ? 0 : trueLogit(this.game, targets, y, y2) / 2)),
    );
    return fromLogits(logits);
  }

  /** Every candidate ordered by Bradley-Terry score of P* (exact, so one method serves both). */
  async rank(prompt: number[], candidates: number[][], _method: 'matrix' | 'bubble') {
    const { scores } = await this.compare(prompt, candidates);
    const order = orderByScores(scores);
    const k = candidates.length;
    return { order, best: order[0]!, scores, judged: k * (k - 1) };
  }

  async release(): Promise<void> {}
}

export function saveOracleJudgeDir(dir: string, game: GameConfig): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, 'config.json'),
    `${JSON.stringify({ model_type: ORACLE_MODEL_TYPE, game }, null, 2)}\n`,
  );
}

/** This module as a judge module (src/models/judge/judge-type.ts). */
export const judgeTypes: readonly JudgeType[] = [
  { modelType: ORACLE_MODEL_TYPE, load: (dir) => OracleJudge.fromDir(dir) },
];

/** This file as tsc builds it, for a scorer's `judges.modules` (wherever the caller was bundled). */
export const oracleJudgeModule = () => builtFile('src/testbed/oracle-judge.js');
