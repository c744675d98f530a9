/**
 * A run's goals (RunSpec.goals): a threshold on a metric its rounds report, as `>= 0.75`. They are
 * what the live run page heads with, met or missed on the latest round that reports the metric;
 * nothing in the run acts on them. The names are those the orchestrator's stages and the trainer
 * put in a round's summary, so a misspelt goal is refused at CreateRun instead of never being met.
 */

/** Metrics a round's summary carries, and what each means on the page. */
export const ROUND_METRICS: Readonly<Record<string, string>> = {
  win_rate_vs_ref: "the run's judge: the round's policy against the reference (evaluated)",
  win_rate_vs_prev: "the run's judge: the round's policy against the previous round's (evaluated)",
  eval_length: "mean completion length of the round's policy on the held-out prompts",
  loss_first: 'training loss of the round’s first step',
  loss_last: 'training loss of the round’s last step',
  loss_mean: 'training loss, mean over the round’s steps',
  grad_norm_mean: 'gradient norm, mean over the round’s steps',
  kl_to_ref: 'KL(π‖π_ref) on one fresh sample per prompt',
  entropy: 'mean next-token entropy of those samples',
  completion_length: 'mean length of those samples',
  mean_length: 'mean length of the round’s sampled completions',
  completions: 'completions sampled in the round',
  pairs: 'ordered pairs the judge scored in the round',
  sample_seconds: 'seconds the sample stage took',
  score_seconds: 'seconds the score stage took',
  train_seconds: 'seconds the train stage took',
  eval_seconds: 'seconds the evaluate stage took',
  round_seconds: 'seconds from the round’s start to its completion',
};

export type GoalOp = '>=' | '<=' | '>' | '<';

export interface Goal {
  metric: string;
  op: GoalOp;
  value: number;
}

const EXPRESSION = /^\s*(>=|<=|>|<)\s*(-?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*$/i;

/** The goal `metric: text`, or why it is not one. */
export function parseGoal(metric: string, text: string): Goal | { error: string } {
  if (!Object.hasOwn(ROUND_METRICS, metric))
    return {
      error: `'${metric}' is not a metric a round reports (known: ${Object.keys(ROUND_METRICS).join(', ')})`,
    };
  const m = EXPRESSION.exec(text);
  if (!m) return { error: `must be a comparison and a number, as '>= 0.75' or '< 0.1', got '${text}'` };
  return { metric, op: m[1] as GoalOp, value: Number(m[2]) };
}

export function goalMet(g: Goal, x: number): boolean {
  switch (g.op) {
    case '>=':
      return x >= g.value;
    case '<=':
      return x <= g.value;
    case '>':
      return x > g.value;
    case '<':
      return x < g.value;
  }
}

export const goalText = (g: Goal) => `${g.metric} ${g.op} ${g.value}`;
