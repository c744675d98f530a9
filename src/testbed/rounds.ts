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
  /** The exploitability floor of round `round`'s regularisation (a schedule may change τ). */
  floor: (refStyles: number[], round: number) => number;
  log: (line: string) => void;
}

const JUDGE_KEYS = ['win_rate_vs_ref', 'win_rate_vs_prev', 'eval_length'];

export async function evaluateRounds(runtime: Runtime, g: GameConfig, o: EvaluateRoundsOptions) {
  // π_ref's opponent samples use another seed than its own graded samples, so round 0 is a fair ½.
  const opponents = await samplePolicy(runtime, g, o.refDir, o.targets, o.samples, o.seed + 1);
  const refStyles = styleDistribution(g, opponents);
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
        exploitability_floor: o.floor(refStyles, Math.max(1, round)),
      };
      rounds.push({ round, oracle, judge, train, seconds });
      o.log(`  round ${round}: ${described(oracle)}`);
    }
  } finally {
    await ref.release();
  }
  const own = sampled.slice(1);
  const mixtureOf = (first: number): Mixture | undefined => {
    const members = own.slice(first - 1);
    if (members.length === 0) return undefined;
    const metrics = {
      ...oracleMetrics(g, mixedSamples(members, o.samples), opponents, mixedStyles(styleProbs.slice(first))),
      kl_to_ref: Number.NaN,
      exploitability_floor: o.floor(refStyles, own.length),
    };
    o.log(
      `  mixture of rounds ${first}..${own.length}: exploitability ${metrics.exploitability.toFixed(3)}, win rate vs π_ref ${metrics.win_rate_vs_ref.toFixed(3)}`,
    );
    return metrics;
  };
  const mixture = mixtureOf(1);
  // The last half of the rounds (from ⌊R/2⌋+1): tail averaging drops the early, weaker policies
  // that the uniform mixture still carries, as averaged SGD does.
  const mixtureLastHalf = own.length >= 2 ? mixtureOf(Math.floor(own.length / 2) + 1) : undefined;
  return { rounds, mixture, mixtureLastHalf, refStyles, opponents };
}

type Mixture = OracleMetrics & { kl_to_ref: number; exploitability_floor: number };

export const described = (m: Mixture) =>
  `win rate vs π_ref ${m.win_rate_vs_ref.toFixed(3)}, exploitability ${m.exploitability.toFixed(3)} (styles alone ${m.exploitability_styles.toFixed(3)}, floor ${m.exploitability_floor.toFixed(3)}), quality ${m.quality.toFixed(3)}, style entropy ${m.style_entropy.toFixed(3)}`;

/**
 * One more policy graded as evaluateRounds grades a round: the same held-out prompts against the
 * same π_ref samples (`opponents`, as evaluateRounds returns them), and the policy's own samples
 * with the rounds' seed.
 */
export async function evaluatePolicy(
  runtime: Runtime,
  g: GameConfig,
  o: {
    dir: string;
    refDir: string;
    targets: number[][];
    opponents: SampledPolicy;
    samples: number;
    seed: number;
    floor: number;
  },
): Promise<Mixture> {
  const { opponents } = o;
  const s = await samplePolicy(runtime, g, o.dir, o.targets, o.samples, o.seed);
  const ref = await refScorer(runtime, o.refDir);
  try {
    return {
      ...oracleMetrics(g, s, opponents, await exactStyles(runtime, g, o.dir, s.prompts)),
      kl_to_ref: await klToRef(ref, s),
      exploitability_floor: o.floor,
    };
  } finally {
    await ref.release();
  }
}

/** The uniform mixture's samples: completion j of each prompt comes from member j mod M. */
function mixedSamples(members: SampledPolicy[], samples: number): SampledPolicy {
  const pick = <T>(of: (p: SampledPolicy) => T[][]) =>
    members[0]!.prompts.map((_, i) =>
      Array.from({ length: samples }, (_, j) => of(members[j % members.length]!)[i]![j]!),
    );
  return {
    prompts: members[0]!.prompts,
    completions: pick((p) => p.completions),
    logprobs: pick((p) => p.logprobs),
  };
}

/** The mixture's style distribution at a prompt: the mean of its members' distributions. */
function mixedStyles(members: number[][][]): number[][] {
  return members[0]!.map((perPrompt, i) =>
    perPrompt.map((_, st) => members.reduce((acc, m) => acc + m[i]![st]!, 0) / members.length),
  );
}
