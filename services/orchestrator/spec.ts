/**
 * A RunSpec checked once, at CreateRun: every problem named by its field, the algorithm's
 * hyper-parameters validated by its recipe, and what the rounds will sample worked out, so a run
 * that starts cannot fail later on something its spec already said.
 */
import type { SamplingPlan } from '../../src/algorithms/round-plan.js';
import { scheduledKeys } from '../../src/algorithms/schedule.js';
import { parseTrainingSettings, settingsFromWire } from '../../src/algorithms/training-settings.js';
import { DuelError } from '../../src/errors.js';
import type { RunSpec } from '../../src/gen/duel/v1/runs.js';
import { checkLora, checkModelRef, checkSampling } from '../../src/platform/contract-checks.js';
import { parseGoal } from '../../src/platform/run-goals.js';
import { Violations } from '../../src/platform/violations.js';

export interface RunLimits {
  maxRounds: number;
  maxNewTokens: number;
  maxSamplesPerPrompt: number;
}

/** Beyond a few versions the samples say little about π_t (docs/algorithms.md "Staleness"). */
const MAX_STALENESS = 8;

const DEFAULT_RUN_LIMITS: RunLimits = { maxRounds: 1000, maxNewTokens: 4096, maxSamplesPerPrompt: 64 };

/** Run ids are NATS subject tokens and KV keys: lower-case letters, digits and dashes. */
const RUN_ID = /^[a-z0-9][a-z0-9-]{0,62}$/;
const NAME = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;

export interface RunPlan {
  sampling: SamplingPlan;
  /** Prefix of checkpoint names in the trainer's store. */
  prefix: string;
  evalSamples: number;
}

/** Whether `id` can name a run (a NATS subject token and a KV key). */
export const isRunId = (id: string) => RUN_ID.test(id);

export function checkRunId(id: string, field = 'run_id'): void {
  if (!isRunId(id))
    throw DuelError.invalidArgument([
      { field, description: `must match ${RUN_ID.source} (it names NATS subjects and KV keys), got '${id}'` },
    ]);
}

export async function planRun(spec: RunSpec | undefined, limits = DEFAULT_RUN_LIMITS): Promise<RunPlan> {
  if (!spec) throw DuelError.invalidArgument([{ field: 'spec', description: 'is required' }]);
  const v = new Violations();
  checkModelRef(v, spec.policy, 'spec.policy');
  checkModelRef(v, spec.reference, 'spec.reference');
  if (spec.lora) {
    checkLora(v, spec.lora, 'spec.lora');
    v.check(
      !spec.policy?.adapter,
      'spec.policy.adapter',
      'is not supported with spec.lora: the run trains its own adapter on the base',
    );
  }
  for (const [m, field] of [
    [spec.reference, 'spec.reference.adapter'],
    [spec.judge, 'spec.judge.adapter'],
  ] as const)
    v.check(!m?.adapter, field, 'is not supported: the reference and the judge are full models');
  checkModelRef(v, spec.judge, 'spec.judge');
  v.check(spec.algorithm !== '', 'spec.algorithm', 'is required');
  v.check(spec.promptsUri !== '', 'spec.prompts_uri', 'is required (a JSONL file of prompts)');
  v.check(
    spec.rounds >= 1 && spec.rounds <= limits.maxRounds,
    'spec.rounds',
    `must be in 1..${limits.maxRounds}, got ${spec.rounds}`,
  );
  checkSampling(v, spec.sampling, 'spec.sampling', {
    maxSamples: limits.maxSamplesPerPrompt,
    maxNewTokens: limits.maxNewTokens,
  });
  v.check((spec.sampling?.maxNewTokens ?? 0) >= 1, 'spec.sampling.max_new_tokens', 'must be at least 1');
  v.check(
    spec.samplesPerPrompt <= limits.maxSamplesPerPrompt,
    'spec.samples_per_prompt',
    `must be at most ${limits.maxSamplesPerPrompt}`,
  );
  v.check(
    spec.evalSamplesPerPrompt <= limits.maxSamplesPerPrompt,
    'spec.eval_samples_per_prompt',
    `must be at most ${limits.maxSamplesPerPrompt}`,
  );
  v.check(
    spec.maxStaleness <= MAX_STALENESS,
    'spec.max_staleness',
    `must be at most ${MAX_STALENESS} (policy versions a round's records may lag), got ${spec.maxStaleness}`,
  );
  v.check(
    spec.artifactUri === '' || (NAME.test(spec.artifactUri) && !spec.artifactUri.split('/').includes('..')),
    'spec.artifact_uri',
    `must be a relative name inside the artifact store (letters, digits, . _ - and /), got '${spec.artifactUri}'`,
  );
  for (const [metric, text] of Object.entries(spec.goals)) {
    const goal = parseGoal(metric, text);
    v.check(!('error' in goal), `spec.goals.${metric}`, 'error' in goal ? goal.error : '');
  }
  v.throwIfAny();
  parseTrainingSettings(settingsFromWire(spec.optimizer), (key) => `spec.optimizer.${key}`);
  // Every round's values pass the recipe; a schedule may not change what a round samples, since
  // sampling is planned once per run. The recipes are loaded here, not at start: they bring the
  // tensor engine (their losses) and every hyper-parameter schema, milliseconds of the
  // orchestrator's cold start (BENCHMARKS.md) for a check only CreateRun and a resume make.
  const { recipesByRound, RECIPES } = await import('../../src/algorithms/recipes/index.js');
  if (!Object.hasOwn(RECIPES, spec.algorithm))
    throw DuelError.invalidArgument([
      {
        field: 'spec.algorithm',
        description: `unknown algorithm '${spec.algorithm}' (known: ${Object.keys(RECIPES).join(', ')})`,
      },
    ]);
  const byRound = recipesByRound(spec.algorithm, spec.hyperparameters, spec.rounds, 'spec.hyperparameters');
  const sampling = byRound[0]!.sampling(spec.samplesPerPrompt);
  for (const [i, r] of byRound.entries())
    if (JSON.stringify(r.sampling(spec.samplesPerPrompt)) !== JSON.stringify(sampling))
      throw DuelError.invalidArgument([
        {
          field: `spec.hyperparameters.${scheduledKeys(spec.hyperparameters).join(', ')}`,
          description: `a schedule may not change what a round samples (round ${i + 1} would sample differently from round 1)`,
        },
      ]);
  if (spec.maxStaleness > 0 && byRound[0]!.recipe.onPolicyEstimator)
    throw DuelError.invalidArgument([
      {
        field: 'spec.max_staleness',
        description: `${spec.algorithm}'s loss is a policy-gradient estimate over π_θ's own samples: records from an older policy would need importance weights, which duel does not apply; use 0`,
      },
    ]);
  if (spec.referenceUpdateEvery > 0 && !byRound[0]!.recipe.usesReference)
    throw DuelError.invalidArgument([
      {
        field: 'spec.reference_update_every',
        description: `${spec.algorithm}'s loss has no reference to update (it regularises toward π_t only)`,
      },
    ]);
  if (sampling.k > limits.maxSamplesPerPrompt)
    throw DuelError.invalidArgument([
      { field: 'spec.hyperparameters.k', description: `must be at most ${limits.maxSamplesPerPrompt}` },
    ]);
  return {
    sampling,
    prefix: spec.artifactUri || 'runs',
    evalSamples: spec.evalSamplesPerPrompt || 4,
  };
}
