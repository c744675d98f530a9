/**
 * Samples of a policy on the evaluation prompts, drawn in-process (the evaluation is the
 * testbed's, not the run's), and the learned judge's probabilities for fidelity checks.
 */
import type { Runtime } from '../engine/index.js';
import { generate } from '../models/generate.js';
import { loadJudgeDir } from '../models/judge/load.js';
import { LogprobRunner } from '../models/llama/logprob-runner.js';
import { DecoderRunner } from '../models/llama/runner.js';
import { loadModelDir } from '../models/model-dir.js';
import { judgePairs } from './corpus.js';
import { type GameConfig, LETTERS, letterId, maxNewTokens, promptIds, VOCAB } from './game.js';
import { type JudgeProbs, judgeFidelity, type PolicySamples } from './oracle.js';

export interface SampledPolicy extends PolicySamples {
  /** log π(y) of each completion under the policy that drew it. */
  logprobs: number[][];
}

export async function samplePolicy(
  runtime: Runtime,
  g: GameConfig,
  modelDir: string,
  targets: number[][],
  n: number,
  seed: number,
): Promise<SampledPolicy> {
  const m = loadModelDir(modelDir);
  const runner = await DecoderRunner.create(runtime, m.config, m.weights);
  try {
    const prompts = targets.map(promptIds);
    const gens = await generate(runner, prompts, {
      n,
      maxNewTokens: maxNewTokens(g),
      seed,
      eosIds: [VOCAB.eos],
      padId: VOCAB.pad,
      temperature: 1,
      topK: 0,
      topP: 1,
    });
    const completions = prompts.map(() => [] as number[][]);
    const logprobs = prompts.map(() => [] as number[]);
    for (const x of gens) {
      completions[x.prompt]![x.sample] = x.tokens;
      logprobs[x.prompt]![x.sample] = x.logprobs.reduce((a, b) => a + b, 0);
    }
    return { prompts, completions, logprobs };
  } finally {
    await runner.release();
  }
}

/**
 * KL(π‖π_ref) on π's samples, the mean of log π(y) − log π_ref(y), with π_ref's log-prob
 * session made once by the caller and shared by every policy it grades.
 */
export async function klToRef(ref: LogprobRunner, s: SampledPolicy): Promise<number> {
  const seqs = s.prompts.flatMap((p, i) =>
    s.completions[i]!.map((c) => ({ promptIds: p, completionIds: c })),
  );
  const refLp = await ref.logprobs(seqs);
  const mine = s.logprobs.flat();
  return mine.reduce((acc, lp, i) => acc + lp - refLp[i]!.summed, 0) / Math.max(1, mine.length);
}

/**
 * π's exact style distribution at each prompt: a completion's style is its first letter's class,
 * and a completion whose first token is not a letter has none, so π(s | x) is the sum of the
 * first-token probabilities of the letters in class s (one scored token per letter and prompt).
 */
export async function exactStyles(
  runtime: Runtime,
  g: GameConfig,
  modelDir: string,
  prompts: number[][],
): Promise<number[][]> {
  const m = loadModelDir(modelDir);
  const runner = await LogprobRunner.create(runtime, m.config, m.weights);
  try {
    const seqs = prompts.flatMap((p) =>
      LETTERS.map((_, l) => ({ promptIds: p, completionIds: [letterId(l)] })),
    );
    const lp = await runner.logprobs(seqs, 256);
    return prompts.map((_, i) => {
      const probs = new Array<number>(g.n_styles).fill(0);
      LETTERS.forEach((_, l) => {
        probs[l % g.n_styles]! += Math.exp(lp[i * LETTERS.length + l]!.summed);
      });
      return probs;
    });
  } finally {
    await runner.release();
  }
}

/** π_ref's log-prob session for klToRef. */
export async function refScorer(runtime: Runtime, refDir: string): Promise<LogprobRunner> {
  const m = loadModelDir(refDir);
  return LogprobRunner.create(runtime, m.config, m.weights);
}

/**
 * A judge directory against P* on the 1 000 held-out pairs of `seed` (drawn apart from any
 * training pairs of the same seed): what `duel demo` reports as `judge_fidelity`.
 */
export async function heldOutFidelity(runtime: Runtime, g: GameConfig, judgeDir: string, seed: number) {
  const held = judgePairs(g, 1000, seed + 30).map((p) => ({
    prompt: p.prompt,
    first: p.chosen,
    second: p.rejected,
  }));
  const jp = await judgeProbs(runtime, judgeDir);
  try {
    return await judgeFidelity(g, jp.probs, held);
  } finally {
    await jp.release();
  }
}

/** The learned judge's P(first ≻ second | prompt) for a batch of pairs (a pairwise judge or a reward model). */
export async function judgeProbs(
  runtime: Runtime,
  judgeDir: string,
): Promise<{ probs: JudgeProbs; release: () => Promise<void> }> {
  const { judge } = await loadJudgeDir(runtime, judgeDir);
  return { probs: (pairs) => judge.pairProbs(pairs), release: () => judge.release() };
}
