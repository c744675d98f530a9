/**
 * The run spec file (YAML or JSON) → RunSpec. Keys are snake_case like the contract's fields;
 * models are directories (or `{uri, sha256}` references) and prompt sets are JSONL paths, both
 * relative to the spec file. A model directory without manifest.json gets one (said on stderr), so
 * it can travel by reference and digest like every other artifact.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { settingsToWire, trainingSettingsSchema } from '../algorithms/training-settings.js';
import { DuelError } from '../errors.js';
import type { ModelRef } from '../gen/duel/v1/common.js';
import type { RunSpec } from '../gen/duel/v1/runs.js';
import { LORA_TARGETS } from '../models/lora/config.js';
import { MANIFEST, verifyArtifact, writeManifest } from '../platform/artifacts.js';

const modelField = z.union([
  z.string().min(1),
  z.strictObject({ uri: z.string().regex(/^(file|nats):\/\//), sha256: z.string().regex(/^[0-9a-f]{64}$/) }),
]);
const count = z.number().int().min(0);

const runSpecFile = z.strictObject({
  name: z.string().default(''),
  algorithm: z.string().min(1),
  hyperparameters: z.record(z.string(), z.union([z.number(), z.string(), z.boolean()])).default({}),
  policy: modelField,
  /** Defaults to the policy. */
  reference: modelField.optional(),
  judge: modelField,
  prompts: z.string().min(1),
  eval_prompts: z.string().optional(),
  rounds: z.number().int().min(1),
  samples_per_prompt: count.default(0),
  prompts_per_round: count.default(0),
  eval_samples_per_prompt: count.default(0),
  max_replicas: count.default(0),
  /** Every N rounds the loss's reference becomes the latest checkpoint (RunSpec.reference_update_every). */
  reference_update_every: count.default(0),
  /** Rounds overlap: records may lag the policy they train by up to this many versions (RunSpec.max_staleness). */
  max_staleness: count.default(0),
  seed: count.optional(),
  artifact_prefix: z.string().default(''),
  /** Train a LoRA adapter each round instead of every weight (RunSpec.lora). */
  lora: z
    .strictObject({
      rank: z.number().int().min(1),
      alpha: z.number().positive(),
      targets: z.array(z.enum(LORA_TARGETS)).min(1).default(['q_proj', 'v_proj']),
      rslora: z.boolean().default(false),
    })
    .optional(),
  sampling: z
    .strictObject({
      max_new_tokens: z.number().int().min(1),
      temperature: z.number().min(0).optional(),
      top_k: count.default(0),
      top_p: z.number().gt(0).max(1).optional(),
    })
    .prefault({ max_new_tokens: 32 }),
  optimizer: trainingSettingsSchema.prefault({}),
  /** Metric → threshold, as `win_rate_vs_ref: ">= 0.75"` (RunSpec.goals; checked at CreateRun). */
  goals: z.record(z.string(), z.union([z.string(), z.number()])).default({}),
});

/** A model directory as a reference, writing its manifest when it has none. */
function modelRefOf(value: z.infer<typeof modelField>, base: string, name: string, field: string): ModelRef {
  if (typeof value !== 'string') return { artifact: value, adapter: undefined, name };
  const dir = isAbsolute(value) ? value : resolve(base, value);
  if (!existsSync(dir) || !statSync(dir).isDirectory())
    throw DuelError.invalidArgument([{ field, description: `${dir} is not a model directory` }]);
  let digest: string;
  if (existsSync(join(dir, MANIFEST))) {
    digest = createHash('sha256')
      .update(readFileSync(join(dir, MANIFEST)))
      .digest('hex');
    verifyArtifact(dir, digest);
  } else {
    digest = writeManifest(dir);
    process.stderr.write(`duel: wrote ${join(dir, MANIFEST)} (sha256 ${digest.slice(0, 12)}…)\n`);
  }
  return { artifact: { uri: pathToFileURL(dir).href, sha256: digest }, adapter: undefined, name };
}

export function parseRunSpec(raw: unknown, base: string, where: string): RunSpec {
  const parsed = runSpecFile.safeParse(raw);
  if (!parsed.success)
    throw DuelError.invalidArgument(
      parsed.error.issues.map((i) => ({
        field: `${where}: ${i.path.join('.') || '(spec)'}`,
        description: i.message,
      })),
    );
  const s = parsed.data;
  const path = (p: string) => (isAbsolute(p) || p.startsWith('file://') ? p : resolve(base, p));
  const policy = modelRefOf(s.policy, base, 'policy', `${where}: policy`);
  return {
    name: s.name,
    algorithm: s.algorithm,
    hyperparameters: Object.fromEntries(Object.entries(s.hyperparameters).map(([k, v]) => [k, String(v)])),
    policy,
    reference: s.reference
      ? modelRefOf(s.reference, base, 'reference', `${where}: reference`)
      : { ...policy, name: 'reference' },
    judge: modelRefOf(s.judge, base, 'judge', `${where}: judge`),
    promptsUri: path(s.prompts),
    evalPromptsUri: s.eval_prompts ? path(s.eval_prompts) : '',
    rounds: s.rounds,
    samplesPerPrompt: s.samples_per_prompt,
    promptsPerRound: s.prompts_per_round,
    evalSamplesPerPrompt: s.eval_samples_per_prompt,
    maxReplicas: s.max_replicas,
    referenceUpdateEvery: s.reference_update_every,
    maxStaleness: s.max_staleness,
    lora: s.lora,
    seed: s.seed,
    artifactUri: s.artifact_prefix,
    sampling: {
      numSamples: 0,
      maxNewTokens: s.sampling.max_new_tokens,
      temperature: s.sampling.temperature,
      topK: s.sampling.top_k,
      topP: s.sampling.top_p,
      seed: undefined,
    },
    optimizer: settingsToWire(s.optimizer),
    // A bare number means "at least": the usual reading of a target win rate.
    goals: Object.fromEntries(
      Object.entries(s.goals).map(([k, v]) => [k, typeof v === 'number' ? `>= ${v}` : v]),
    ),
  };
}

export function readRunSpec(file: string): RunSpec {
  if (!existsSync(file))
    throw DuelError.invalidArgument([{ field: '--spec', description: `${file} not found` }]);
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(file, 'utf8'));
  } catch (e) {
    throw DuelError.invalidArgument([
      { field: file, description: `not valid YAML/JSON: ${(e as Error).message}` },
    ]);
  }
  return parseRunSpec(raw, dirname(resolve(file)), file);
}
