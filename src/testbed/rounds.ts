/**
 * Every round's policy graded by the oracle: samples on the held-out prompts, the oracle
 * metrics against π_ref's samples, KL to π_ref; and the uniform mixture of the round policies
 * (sample a round, then sample from it), the policy SPPO's guarantee is about.
 */
import type { Runtime } from '../engine/index.js';
import type { RoundSummary } from '../gen/duel/v1/runs.js';
import { exactStyles, klToRef, refScorer, type SampledPolicy, samplePolicy } from './evaluate.js';
import type { GameConfig } from './game.js';
import { type OracleMetrics, oracleMetrics, styleDistribution } from './oracle.js';

export interface RoundEvaluation {
  round: number;
  oracle: OracleMetrics & { kl_to_ref: number; exploitability_floor: number };
  /** What the run's judge said (evaluate stage): win rates vs π_ref and π_{t−1}. */
  judge: Record<string, number>;
  /** The trainer's metrics of the round. */
  train: Record<string, number>;
  seconds: number;
}

export interface EvaluateRoundsOptions {
  /** Model directories, round 0 (π_ref) first. */
  checkpoints: string[];
  refDir: string;
  targets: number[][];
  samples: number;
  seed: number;
  runRounds: RoundSummary[];
  floor: (refStyles: number[]) => number;
  log: (line: string) => void;
}

const JUDGE_KEYS = ['win_rate_vs_ref', 'win_rate_vs_prev', 'eval_length'];

export async function evaluateRounds(runtime: Runtime, g: GameConfig, o: EvaluateRoundsOptions) {
  // π_ref's opponent samples use another seed than its own graded samples, so round 0 is a fair ½.
  const opponents = await samplePolicy(runtime, g, o.refDir, o.targets, o.samples, o.seed + 1);
  const refStyles = styleDistribution(g, opponents);
  const floor = o.floor(refStyles);
  const sampled: SampledPolicy[] = [];
  const styleProbs: number[][][] = [];
  const rounds: RoundEvaluation[] = [];
  const ref = await refScorer(runtime, o.refDir);
  try {
    for (const [round, dir] of o.checkpoints.entries()) {
      const s = await samplePolicy(runtime, g, dir, o.targets, o.samples, o.seed);
      const styles = await exactStyles(runtime, g, dir, s.prompts);
      sampled.push(s);
      styleProbs.push(styles);
      const summary = o.runRounds.find((r) => r.round === round);
      const values = summary?.metrics?.values ?? {};
      const train = Object.fromEntries(Object.entries(values).filter(([k]) => !JUDGE_KEYS.includes(k)));
      const judge = Object.fromEntries(Object.entries(values).filter(([k]) => JUDGE_KEYS.includes(k)));
      const seconds =
        summary?.startedAt && summary.finishedAt
          ? (summary.finishedAt.getTime() - summary.startedAt.getTime()) / 1000
          : 0;
      const oracle = {
        ...oracleMetrics(g, s, opponents, styles),
        kl_to_ref: await klToRef(ref, s),
        exploitability_floor: floor,
      };
      rounds.push({ round, oracle, judge, train, seconds });
      o.log(
        `  round ${round}: win rate vs π_ref ${oracle.win_rate_vs_ref.toFixed(3)}, exploitability ${oracle.exploitability.toFixed(3)} (floor ${floor.toFixed(3)}), quality ${oracle.quality.toFixed(3)}, style entropy ${oracle.style_entropy.toFixed(3)}`,
      );
    }
  } finally {
    await ref.release();
  }
  // The mixture of rounds 1..R: completion j of each prompt comes from round 1 + (j mod R).
  const own = sampled.slice(1);
  let mixture: (OracleMetrics & { kl_to_ref: number; exploitability_floor: number }) | undefined;
  if (own.length > 0) {
    const mixed: SampledPolicy = {
      prompts: own[0]!.prompts,
      completions: own[0]!.prompts.map((_, i) =>
        Array.from({ length: o.samples }, (_, j) => own[j % own.length]!.completions[i]![j]!),
      ),
      logprobs: own[0]!.prompts.map((_, i) =>
        Array.from({ length: o.samples }, (_, j) => own[j % own.length]!.logprobs[i]![j]!),
      ),
    };
    // The mixture's style distribution at a prompt is the mean of its rounds' distributions.
    const ownStyles = styleProbs.slice(1);
    const mixedStyles = mixed.prompts.map((_, i) =>
      ownStyles[0]![i]!.map((_, st) => ownStyles.reduce((acc, r) => acc + r[i]![st]!, 0) / ownStyles.length),
    );
    mixture = {
      ...oracleMetrics(g, mixed, opponents, mixedStyles),
      kl_to_ref: Number.NaN,
      exploitability_floor: floor,
    };
    o.log(
      `  mixture of rounds 1..${own.length}: exploitability ${mixture.exploitability.toFixed(3)}, win rate vs π_ref ${mixture.win_rate_vs_ref.toFixed(3)}`,
    );
  }
  return { rounds, mixture, refStyles };
}
