/**
 * How a round, an SFT run or a judge is optimised: one schema with one set of defaults that the
 * command line (`duel train --lr …`), a run spec's `optimizer:` block and the trainer's gRPC
 * `OptimizerConfig` all parse through, so the three cannot disagree on a default or a rule.
 * Keys are the contract's snake_case field names; a problem names the field as its caller spells
 * it (`--lr`, `spec.yaml: optimizer.learning_rate`, `config.optimizer.learning_rate`).
 */
import { z } from 'zod';
import type { OptimizerSpec } from '../engine/index.js';
import { DuelError } from '../errors.js';
import type { OptimizerConfig } from '../gen/duel/v1/common.js';
import type { LoopSettings } from './steps.js';

const count = z.number().int().min(0);
const positiveInt = z.number().int().min(1);

export const trainingSettingsSchema = z
  .strictObject({
    /** @default adamw */
    name: z.enum(['sgd', 'adamw', 'rmsprop']).default('adamw'),
    /** Peak learning rate (after warmup). @default 1e-4 */
    learning_rate: z.number().positive().default(1e-4),
    /** Decoupled for adamw, L2 for sgd and rmsprop. @default 0 */
    weight_decay: z.number().min(0).default(0),
    /** Global-norm gradient clipping; 0 disables. @default 1 */
    grad_clip: z.number().min(0).default(1),
    /** Optimizer steps; exclusive with `epochs`. */
    steps: positiveInt.optional(),
    /** Passes over the records; exclusive with `steps`. @default 1 when `steps` is absent */
    epochs: positiveInt.optional(),
    /** Records (prompts) per step. @default 8 */
    batch_size: positiveInt.default(8),
    /** Learning-rate shape after warmup: constant, or linear/cosine decay to 0 over the run. */
    schedule: z.enum(['constant', 'linear', 'cosine']).default('constant'),
    warmup_steps: count.default(0),
    /** SGD's momentum. @default 0 */
    momentum: z.number().min(0).lt(1).default(0),
    /** AdamW's moment decay rates and ε (RMSProp's ε too); absent: the engine's defaults. */
    beta1: z.number().gt(0).lt(1).optional(),
    beta2: z.number().gt(0).lt(1).optional(),
    epsilon: z.number().positive().optional(),
  })
  .refine((s) => s.steps === undefined || s.epochs === undefined, {
    message: 'set steps or epochs, not both',
    path: ['steps'],
  });

export type TrainingSettings = z.output<typeof trainingSettingsSchema>;

/**
 * `raw` as settings with every default filled in. `field(key)` is how the caller names a key in an
 * error (a flag, a path in a spec file, a request field); every problem is reported at once.
 */
export function parseTrainingSettings(
  raw: Record<string, unknown>,
  field: (key: string) => string,
): TrainingSettings {
  const parsed = trainingSettingsSchema.safeParse(raw);
  if (parsed.success) return parsed.data;
  throw DuelError.invalidArgument(
    parsed.error.issues.map((i) => ({ field: field(String(i.path[0] ?? '')), description: i.message })),
  );
}

/**
 * The wire's OptimizerConfig as raw settings: proto3 cannot tell 0 from unset, so a zero or empty
 * field is left out and takes the schema's default, except `grad_clip` and the decay terms, whose
 * 0 is meaningful (no clipping, no decay) once a config is sent. No config at all: every default.
 */
export function settingsFromWire(o: OptimizerConfig | undefined): Record<string, unknown> {
  if (!o) return {};
  const raw: Record<string, unknown> = {
    weight_decay: o.weightDecay,
    grad_clip: o.gradClip,
    warmup_steps: o.warmupSteps,
    momentum: o.momentum,
  };
  const set = (key: string, value: string | number) => {
    if (value !== '' && value !== 0) raw[key] = value;
  };
  set('name', o.name);
  set('learning_rate', o.learningRate);
  set('steps', o.steps);
  set('epochs', o.epochs);
  set('batch_size', o.batchSize);
  set('schedule', o.schedule);
  set('beta1', o.beta1);
  set('beta2', o.beta2);
  set('epsilon', o.epsilon);
  return raw;
}

/** Settings as the wire's OptimizerConfig (unset optional fields as 0, the wire's "unset"). */
export function settingsToWire(s: TrainingSettings): OptimizerConfig {
  return {
    name: s.name,
    learningRate: s.learning_rate,
    weightDecay: s.weight_decay,
    gradClip: s.grad_clip,
    steps: s.steps ?? 0,
    epochs: s.steps === undefined ? (s.epochs ?? 1) : 0,
    batchSize: s.batch_size,
    schedule: s.schedule,
    warmupSteps: s.warmup_steps,
    momentum: s.momentum,
    beta1: s.beta1 ?? 0,
    beta2: s.beta2 ?? 0,
    epsilon: s.epsilon ?? 0,
  };
}

/** The engine's optimizer for these settings. */
function optimizerSpec(s: TrainingSettings): OptimizerSpec {
  const eps = s.epsilon === undefined ? {} : { eps: s.epsilon };
  switch (s.name) {
    case 'sgd':
      return { kind: 'sgd', momentum: s.momentum, weightDecay: s.weight_decay };
    case 'rmsprop':
      return { kind: 'rmsprop', weightDecay: s.weight_decay, ...eps };
    case 'adamw':
      return {
        kind: 'adamw',
        weightDecay: s.weight_decay,
        ...(s.beta1 === undefined ? {} : { beta1: s.beta1 }),
        ...(s.beta2 === undefined ? {} : { beta2: s.beta2 }),
        ...eps,
      };
  }
}

/** What the step loop takes from the settings; `seed` shuffles batches and draws sampled labels. */
export function loopSettings(s: TrainingSettings, seed: number): LoopSettings {
  return {
    optimizer: optimizerSpec(s),
    lr: s.learning_rate,
    ...(s.steps === undefined ? { epochs: s.epochs ?? 1 } : { steps: s.steps }),
    batchSize: s.batch_size,
    gradClip: s.grad_clip,
    schedule: s.schedule,
    warmupSteps: s.warmup_steps,
    seed,
  };
}
