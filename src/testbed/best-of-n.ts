/**
 * Best-of-n reranking at test time, graded by the oracle: for each prompt, n completions of a
 * policy, the one the judge ranks first (highest mean P(y ≻ y') over the other n−1: the judge's
 * own win rates, as the scorer computes them), repeated over `groups` disjoint draws so that the
 * reranked policy has several samples per prompt to grade. n = 1 is the policy itself. The judge is
 * the run's (learned or oracle); only the oracle grades, so a judge that is wrong picks wrong and
 * it shows.
 */
import type { Runtime } from '../engine/index.js';
import type { Preferences } from '../models/judge/runner.js';
import { samplePolicy } from './evaluate.js';
import type { GameConfig } from './game.js';
import { type OracleMetrics, oracleMetrics, type PolicySamples } from './oracle.js';

export interface BestOfNRow extends OracleMetrics {
  n: number;
}

/** What both judges (JudgeRunner, OracleJudge) offer: a K×K comparison of candidates. */
export interface Reranker {
  compare(prompt: number[], candidates: number[][]): Promise<Preferences>;
}

async function pick(judge: Reranker, prompt: number[], group: number[][]): Promise<number> {
  if (group.length === 1) return 0;
  const { winrates } = await judge.compare(prompt, group);
  return winrates.indexOf(Math.max(...winrates));
}

export async function bestOfN(
  runtime: Runtime,
  g: GameConfig,
  o: {
    policyDir: string;
    reference: PolicySamples;
    targets: number[][];
    ns: number[];
    groups: number;
    seed: number;
    judge: Reranker;
  },
): Promise<BestOfNRow[]> {
  const most = Math.max(...o.ns);
  const drawn = await samplePolicy(runtime, g, o.policyDir, o.targets, most * o.groups, o.seed);
  const rows: BestOfNRow[] = [];
  for (const n of o.ns) {
    const completions: number[][][] = [];
    for (const [i, prompt] of drawn.prompts.entries()) {
      const mine: number[][] = [];
      for (let k = 0; k < o.groups; k++) {
        // Group k uses draws [k·most, k·most + n): the same first n for every n, so rows differ
        // only by how many candidates the judge saw.
        const group = drawn.completions[i]!.slice(k * most, k * most + n);
        mine.push(group[await pick(o.judge, prompt, group)]!);
      }
      completions.push(mine);
    }
    rows.push({ n, ...oracleMetrics(g, { prompts: drawn.prompts, completions }, o.reference) });
  }
  return rows;
}
