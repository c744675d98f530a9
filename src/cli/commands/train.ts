/**
 * `duel train round` (one round of a self-play algorithm on round JSONL) and `duel train sft`:
 * what the trainer service runs, usable alone. Writes a model directory plus metrics.json (with
 * --lora or --adapter, a PEFT adapter directory: only the adapter trains, on the frozen model); a
 * diverged round writes nothing and exits non-zero.
 */
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { parseSets, RECIPES, type RoundRecord } from '../../algorithms/recipes/index.js';
import { type LoopSettings, type RoundMetrics, stepCount } from '../../algorithms/steps.js';
import { duelJudge, pairrmJudge, trainJudge, trainRewardModel } from '../../algorithms/train-judge.js';
import { trainRound } from '../../algorithms/train-round.js';
import { loopSettings, parseTrainingSettings } from '../../algorithms/training-settings.js';

import type { ComputeDtype } from '../../engine/index.js';
import { DuelError } from '../../errors.js';
import { parseJudgeConfig } from '../../models/judge/config.js';
import { judgeParams } from '../../models/judge/model.js';
import { saveJudgeDir } from '../../models/judge/runner.js';
import type { LlamaConfig } from '../../models/llama/config.js';
import { type Adapter, initAdapter, readAdapterDir, writeAdapterDir } from '../../models/lora/adapter.js';
import { type LoraConfig, parseLoraFlag } from '../../models/lora/config.js';
import { loadModelDir, readConfigJson, readWeights, saveModelDir } from '../../models/model-dir.js';
import { isPairRMConfig } from '../../models/pairrm/config.js';
import { readPairRMConfig, readPairRMWeights, savePairRMDir } from '../../models/pairrm/runner.js';
import { isRewardConfig, parseRewardConfig } from '../../models/reward/config.js';
import { readRewardWeights, saveRewardDir } from '../../models/reward/runner.js';
import { intFlag, numberFlag } from '../flags.js';
import { progress } from '../progress.js';
import { readRecords } from '../records.js';
import { cliRuntime, dtypeOption } from '../runtime.js';

interface TrainFlags {
  model: string;
  ref?: string;
  data: string;
  out: string;
  optimizer?: string;
  lr?: number;
  steps?: number;
  epochs?: number;
  batchSize?: number;
  gradClip?: number;
  weightDecay?: number;
  momentum?: number;
  schedule?: string;
  warmupSteps?: number;
  seed: number;
  set: string[];
  quiet?: boolean;
  dtype?: ComputeDtype;
  foldSteps?: number;
  gradientCheckpointing?: boolean;
  lora?: string;
  adapter?: string;
}

/** Each training setting's flag; the defaults and rules live in the settings schema. */
const FLAGS = {
  name: ['optimizer', '--optimizer <name>', 'sgd | adamw | rmsprop (default adamw)'],
  learning_rate: ['lr', '--lr <x>', 'peak learning rate (default 1e-4)'],
  steps: ['steps', '--steps <n>', 'optimizer steps (instead of --epochs)'],
  epochs: ['epochs', '--epochs <n>', 'passes over the records (default 1)'],
  batch_size: ['batchSize', '--batch-size <n>', 'records per step (default 8)'],
  grad_clip: ['gradClip', '--grad-clip <c>', 'global-norm clipping; 0 disables (default 1)'],
  weight_decay: ['weightDecay', '--weight-decay <w>', 'decoupled for adamw, L2 for sgd/rmsprop (default 0)'],
  momentum: ['momentum', '--momentum <m>', 'sgd momentum (default 0)'],
  schedule: [
    'schedule',
    '--schedule <kind>',
    'learning-rate shape: constant | linear | cosine (decaying to 0)',
  ],
  warmup_steps: ['warmupSteps', '--warmup-steps <n>', 'linear warmup steps (default 0)'],
} as const satisfies Record<string, readonly [keyof TrainFlags, string, string]>;

const flagOf = (key: string) => FLAGS[key as keyof typeof FLAGS]?.[1].split(' ')[0] ?? `--${key}`;

function withTrainingFlags(cmd: Command, model = true): Command {
  if (model) cmd.requiredOption('--model <dir>', 'π_θ at the start (also π_t)');
  cmd
    .requiredOption('--data <file>', 'JSONL records')
    .requiredOption('--out <dir>', 'the model directory to write (with metrics.json)');
  for (const [key, [, flag, help]] of Object.entries(FLAGS))
    if (key === 'name' || key === 'schedule') cmd.option(flag, help);
    else
      cmd.option(
        flag,
        help,
        numberFlag(flagOf(key), () => true, 'must be a number'),
      );
  return cmd
    .option(
      '--seed <n>',
      'shuffling and sampled labels',
      numberFlag('--seed', (n) => Number.isInteger(n) && n >= 0, 'must be an integer >= 0'),
      0,
    )
    .option('--set <key=value...>', 'algorithm hyper-parameters (e.g. eta=1000)', [])
    .option('--quiet', 'no progress lines');
}

/**
 * --lora and --adapter: train a LoRA adapter instead of every weight; --dtype: in what precision;
 * --fold-steps: how many steps one runtime call takes; --gradient-checkpointing: memory for time.
 */
function withLoraFlags(cmd: Command): Command {
  return cmd
    .option(
      '--gradient-checkpointing',
      "recompute each layer's activations in the backward pass instead of keeping them: far less memory for one more forward pass a step",
    )
    .option(
      '--fold-steps <k>',
      'steps per runtime call (one ONNX Loop): the weights and optimizer state cross to the device once per call, for the cuda provider (float32; not SPO)',
      intFlag('--fold-steps', 1),
    )
    .option(
      ...dtypeOption(
        'what the forward and backward passes compute in (float16: float32 master weights and optimizer, the loss scaled dynamically)',
      ),
    )
    .option(
      '--lora <spec>',
      "train a fresh LoRA adapter: rank=R,alpha=A,targets=q_proj+v_proj (all: every block's linear layers; +lm_head: the LM head too)[,rslora]; --out gets a PEFT adapter directory",
    )
    .option('--adapter <dir>', 'continue training this LoRA adapter (PEFT layout)');
}

/** The adapter the flags ask to train, checked before any model file is read where it can be. */
function loraOf(f: TrainFlags): LoraConfig | undefined {
  if (f.lora && f.adapter)
    throw DuelError.invalidArgument([
      {
        field: '--lora',
        description: 'give --lora (a fresh adapter) or --adapter (an existing one), not both',
      },
    ]);
  return f.lora ? parseLoraFlag(f.lora) : undefined;
}

function adapterOf(f: TrainFlags, lora: LoraConfig | undefined, cfg: LlamaConfig): Adapter | undefined {
  const adapter = f.adapter
    ? readAdapterDir(f.adapter, cfg)
    : lora
      ? initAdapter(cfg, lora, f.seed)
      : undefined;
  if (adapter && adapter.config.dropout > 0)
    throw DuelError.invalidArgument([
      {
        field: `${f.adapter}: lora_dropout`,
        description: `is ${adapter.config.dropout}; duel trains adapters without dropout (set it to 0 to continue training)`,
      },
    ]);
  return adapter;
}

/** The flags' training settings, through the one schema: checked before any file is read. */
function settingsOf(f: Omit<TrainFlags, 'model'>): LoopSettings {
  const raw = Object.fromEntries(
    Object.entries(FLAGS)
      .map(([key, [prop]]) => [key, f[prop]] as const)
      .filter(([, v]) => v !== undefined),
  );
  return loopSettings(parseTrainingSettings(raw, flagOf), f.seed);
}

/** The settings with a progress line per step over `records` records. */
function withProgress(settings: LoopSettings, records: number, label: string, quiet?: boolean) {
  const p = progress(label, stepCount(settings, records), quiet);
  return {
    ...settings,
    onStep: (step: number, _total: number, loss: number, tokens: number) =>
      p.tick(step, `loss ${loss.toFixed(4)}, ${tokens} tokens`),
  };
}

/** Refuses to save a diverged run; otherwise saves with metrics.json beside the weights. */
function finish(
  out: string,
  metrics: RoundMetrics,
  save: (extraFiles: Record<string, string>) => void,
): void {
  if (metrics.diverged)
    throw DuelError.failedPrecondition(
      `training diverged (${metrics.skipped_steps} of ${metrics.steps} steps had a non-finite loss or gradient): no checkpoint written`,
    );
  save({ 'metrics.json': `${JSON.stringify(metrics, null, 2)}\n` });
  const overflowed =
    metrics.overflow_steps !== undefined
      ? `, ${metrics.overflow_steps} overflowed in float16 (loss scale now ${metrics.loss_scale})`
      : '';
  process.stderr.write(
    `wrote ${out}: loss ${metrics.loss_first.toFixed(4)} → ${metrics.loss_last.toFixed(4)}, ${metrics.skipped_steps} skipped${overflowed}, ${metrics.tokens_per_s.toFixed(0)} tokens/s\n`,
  );
}

async function run(
  algo: string,
  f: TrainFlags,
  settings: LoopSettings,
  records: RoundRecord[],
  lora: LoraConfig | undefined,
): Promise<void> {
  const model = loadModelDir(f.model);
  const ref = f.ref ? loadModelDir(f.ref) : undefined;
  const adapter = adapterOf(f, lora, model.config);
  const runtime = cliRuntime({ workers: 1, ...(f.dtype ? { dtype: f.dtype } : {}) });
  try {
    const result = await trainRound(runtime, {
      algo,
      hparams: parseSets(f.set),
      config: model.config,
      weights: model.weights,
      ...(ref ? { reference: ref.weights } : {}),
      ...(adapter ? { adapter } : {}),
      ...(f.foldSteps !== undefined ? { foldSteps: f.foldSteps } : {}),
      ...(f.gradientCheckpointing ? { checkpointing: true } : {}),
      records,
      ...withProgress(settings, records.length, `train ${algo}`, f.quiet),
    });
    finish(f.out, result.metrics, (extraFiles) =>
      result.adapter
        ? writeAdapterDir(f.out, result.adapter, f.model, extraFiles)
        : saveModelDir(f.out, model.config, result.weights, { tokenizerFrom: f.model, extraFiles }),
    );
  } finally {
    await runtime.close();
  }
}

export function registerTrain(program: Command): void {
  const train = program.command('train').description('train a model: one self-play round, or SFT');

  withLoraFlags(
    withTrainingFlags(
      train
        .command('round')
        .description(
          `one round of a preference algorithm (${Object.keys(RECIPES)
            .filter((r) => r !== 'sft')
            .join(', ')})`,
        )
        .requiredOption('--algo <name>', 'the algorithm')
        .option(
          '--ref <dir>',
          'π_ref (algorithms with a reference term need it; with an adapter: the base model by default)',
        ),
    ),
  ).action(async (f: TrainFlags & { algo: string }) => {
    const settings = settingsOf(f);
    const lora = loraOf(f);
    await run(f.algo, f, settings, readRecords(f.data, f.model, 'round'), lora);
  });

  withLoraFlags(
    withTrainingFlags(
      train
        .command('sft')
        .description(
          'supervised fine-tuning: mean token cross-entropy over completion tokens, prompt masked',
        ),
    ),
  ).action(async (f: TrainFlags) => {
    const settings = settingsOf(f);
    const lora = loraOf(f);
    await run('sft', f, settings, readRecords(f.data, f.model, 'sft'), lora);
  });

  withTrainingFlags(
    train
      .command('judge')
      .description(
        'train a judge on labelled pairs (prompt_ids, chosen_ids, rejected_ids, optional preference: P(chosen ≻ rejected) for soft labels): a PairRM-style judge (both orders) or a Bradley-Terry reward model',
      )
      .requiredOption('--judge <dir>', 'the judge at the start'),
    false,
  ).action(async (f: Omit<TrainFlags, 'model'> & { judge: string }) => {
    const settings = settingsOf(f);
    const dir = resolve(f.judge);
    const pairs = readRecords(f.data, dir, 'pairs').map((r) => ({
      prompt: r.prompt_ids,
      chosen: r.completion_ids[0]!,
      rejected: r.completion_ids[1]!,
      label: r.prefs[0]![1]!,
    }));
    const json = readConfigJson(dir);
    const runtime = cliRuntime({ workers: 1 });
    try {
      const loop = withProgress(settings, pairs.length, 'train judge', f.quiet);
      if (isRewardConfig(json)) {
        const cfg = parseRewardConfig(json, join(dir, 'config.json'));
        const result = await trainRewardModel(runtime, {
          config: cfg,
          weights: readRewardWeights(dir, cfg),
          pairs,
          ...loop,
        });
        finish(f.out, result.metrics, (extraFiles) =>
          saveRewardDir(f.out, cfg, result.weights, { tokenizerFrom: dir, extraFiles }),
        );
        return;
      }
      if (isPairRMConfig(json)) {
        const cfg = readPairRMConfig(dir, json);
        const result = await trainJudge(runtime, {
          judge: pairrmJudge(cfg),
          weights: readPairRMWeights(dir, cfg),
          pairs,
          ...loop,
        });
        finish(f.out, result.metrics, (extraFiles) =>
          savePairRMDir(f.out, cfg, result.weights, { tokenizerFrom: dir, extraFiles }),
        );
        return;
      }
      const cfg = parseJudgeConfig(json, join(dir, 'config.json'));
      const weights = readWeights(dir, judgeParams(cfg), () => false, 'a duel_pairrm judge');
      const result = await trainJudge(runtime, { judge: duelJudge(cfg), weights, pairs, ...loop });
      finish(f.out, result.metrics, (extraFiles) =>
        saveJudgeDir(f.out, cfg, result.weights, { tokenizerFrom: dir, extraFiles }),
      );
    } finally {
      await runtime.close();
    }
  });
}
