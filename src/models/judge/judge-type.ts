/**
 * A judge type from outside the models duel ships: a module exporting `judgeTypes`, each naming
 * the config.json `model_type` it loads and how. The scorer imports the modules its
 * `judges.modules` setting lists; the testbed's oracle (P* behind the judge interface) comes in
 * this way, so the product never imports the testbed, and a user's own judge (a rule-based
 * verifier, a remote model) plugs in the same way.
 *
 * The module's exports are read rather than a registry shared: a module imported by path from a
 * bundled service is a different copy of every module it imports, so shared state would not be.
 */
import type { JudgeRunner } from './runner.js';

/** What the scorer asks of a judge: K×K preferences and a ranking. */
export type ComparingJudge = Pick<JudgeRunner, 'compare' | 'rank' | 'release'>;

export interface JudgeType {
  /** The `model_type` of the judge directories this type loads. */
  modelType: string;
  load(dir: string): ComparingJudge | Promise<ComparingJudge>;
}

/** A judge module: what `judges.modules` entries export. */
export interface JudgeModule {
  judgeTypes: readonly JudgeType[];
}
