/**
 * `duel train round` (one round of a self-play algorithm on round JSONL) and `duel train sft`:
 * what the trainer service runs, usable alone. Writes a model directory plus metrics.json; a
 * diverged round writes nothing and exits non-zero.
 */

import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { parseSets, RECIPES, type RoundRecord } from '../../algorithms/recipes/index.js';
import { type RoundMetrics, stepCount } from '../../algorithms/steps.js';
import { trainJudge } from '../../algorithms/train-judge.js';
import { trainRound } from '../../algorithms/train-round.js';
import { type OptimizerSpec, Runtime } from '../../engine/index.js';
import { parseJudgeConfig } from '../../models/judge/config.js';
import { judgeParams } from '../../models/judge/model.js';
import { saveJudgeDir } from '../../models/judge/runner.js';
import { loadModelDir, readConfigJson, readWeights, saveModelDir } from '../../models/model-dir.js';
import { DuelError } from '../../platform/errors.js';
import { numberFlag } from '../flags.js';
import { progress } from '../progress.js';
import { readRecords } from '../records.js';

interface TrainFlags {
  model: string;
  ref?: string;
  data: string;
  out: string;
  optimizer: string;
  lr: number;
  steps?: number;
  epochs: number;
  batchSize: number;
  gradClip: number;
  weightDecay: number;
  momentum: number;
  seed: number;
  schedule: string;
  warmupSteps: number;
  set: string[];
  quiet?: boolean;
}

function optimizerOf(f: Pick<TrainFlags, 'optimizer' | 'momentum' | 'weightDecay'>): OptimizerSpec {
  // Plain SGD has no momentum and no weight decay unless asked.
  if (f.optimizer === 'sgd') return { kind: 'sgd', momentum: f.momentum, weightDecay: f.weightDecay };
  if (f.optimizer === 'adamw') return { kind: 'adamw', weightDecay: f.weightDecay };
  if (f.optimizer === 'rmsprop') return { kind: 'rmsprop', weightDecay: f.weightDecay };
  throw DuelError.invalidArgument([
    { field: '--optimizer', description: `must be sgd, adamw or rmsprop, got '${f.optimizer}'` },
  ]);
}

function withTrainingFlags(cmd: Command, model = true): Command {
  if (model) cmd.requiredOption('--model <dir>', 'π_θ at the start (also π_t)');
  return cmd
    .requiredOption('--data <file>', 'JSONL records')
    .requiredOption('--out <dir>', 'the model directory to write (with metrics.json)')
    .option('--optimizer <name>', 'sgd | adamw | rmsprop', 'adamw')
    .option(
      '--lr <x>',
      'learning rate',
      numberFlag('--lr', (n) => n > 0, 'must be > 0'),
      1e-4,
    )
    .option(
      '--steps <n>',
      'optimizer steps (overrides --epochs)',
      numberFlag('--steps', (n) => Number.isInteger(n) && n >= 1, 'must be a positive integer'),
    )
    .option(
      '--epochs <n>',
      'passes over the records',
      numberFlag('--epochs', (n) => Number.isInteger(n) && n >= 1, 'must be a positive integer'),
      1,
    )
    .option(
      '--batch-size <n>',
      'records per step',
      numberFlag('--batch-size', (n) => Number.isInteger(n) && n >= 1, 'must be a positive integer'),
      8,
    )
    .option(
      '--grad-clip <c>',
      'global-norm clipping; 0 disables',
      numberFlag('--grad-clip', (n) => n >= 0, 'must be >= 0'),
      1,
    )
    .option(
      '--weight-decay <w>',
      'decoupled for adamw, L2 for sgd/rmsprop',
      numberFlag('--weight-decay', (n) => n >= 0, 'must be >= 0'),
      0,
    )
    .option(
      '--momentum <m>',
      'sgd momentum',
      numberFlag('--momentum', (n) => n >= 0 && n < 1, 'must be in [0, 1)'),
      0,
    )
    .option(
      '--seed <n>',
      'shuffling and sampled labels',
      numberFlag('--seed', (n) => Number.isInteger(n) && n >= 0, 'must be an integer >= 0'),
      0,
    )
    .option(
      '--schedule <kind>',
      'learning-rate shape: constant | linear | cosine (decaying to 0 over the run)',
      'constant',
    )
    .option(
      '--warmup-steps <n>',
      'linear warmup steps',
      numberFlag('--warmup-steps', (n) => Number.isInteger(n) && n >= 0, 'must be an integer >= 0'),
      0,
    )
    .option('--set <key=value...>', 'algorithm hyper-parameters (e.g. eta=1000)', [])
    .option('--quiet', 'no progress lines');
}

/** What every trainer takes from the flags: optimizer, schedule, batching and a progress line. */
function loopOptions(f: Omit<TrainFlags, 'model'>, records: number, label: string) {
  const steps = stepCount(f, records);
  const p = progress(label, steps, f.quiet);
  if (!['constant', 'linear', 'cosine'].includes(f.schedule))
    throw DuelError.invalidArgument([
      { field: '--schedule', description: `must be constant, linear or cosine, got '${f.schedule}'` },
    ]);
  return {
    optimizer: optimizerOf(f),
    lr: f.lr,
    schedule: f.schedule as 'constant' | 'linear' | 'cosine',
    warmupSteps: f.warmupSteps,
    steps,
    batchSize: f.batchSize,
    gradClip: f.gradClip,
    seed: f.seed,
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
  process.stderr.write(
    `wrote ${out}: loss ${metrics.loss_first.toFixed(4)} → ${metrics.loss_last.toFixed(4)}, ${metrics.skipped_steps} skipped, ${metrics.tokens_per_s.toFixed(0)} tokens/s\n`,
  );
}

async function run(algo: string, f: TrainFlags, records: RoundRecord[]): Promise<void> {
  const model = loadModelDir(f.model);
  const ref = f.ref ? loadModelDir(f.ref) : undefined;
  const runtime = new Runtime({ workers: 1 });
  try {
    const { weights, metrics } = await trainRound(runtime, {
      algo,
      hparams: parseSets(f.set),
      config: model.config,
      weights: model.weights,
      ...(ref ? { reference: ref.weights } : {}),
      records,
      ...loopOptions(f, records.length, `train ${algo}`),
    });
    finish(f.out, metrics, (extraFiles) =>
      saveModelDir(f.out, model.config, weights, { tokenizerFrom: f.model, extraFiles }),
    );
  } finally {
    await runtime.close();
  }
}

export function registerTrain(program: Command): void {
  const train = program.command('train').description('train a model: one self-play round, or SFT');

  withTrainingFlags(
    train
      .command('round')
      .description(
        `one round of a preference algorithm (${Object.keys(RECIPES)
          .filter((r) => r !== 'sft')
          .join(', ')})`,
      )
      .requiredOption('--algo <name>', 'the algorithm')
      .option('--ref <dir>', 'π_ref (algorithms with a reference term need it)'),
  ).action(async (f: TrainFlags & { algo: string }) => {
    await run(f.algo, f, readRecords(f.data, f.model, 'round'));
  });

  withTrainingFlags(
    train
      .command('sft')
      .description('supervised fine-tuning: mean token cross-entropy over completion tokens, prompt masked'),
  ).action(async (f: TrainFlags) => {
    await run('sft', f, readRecords(f.data, f.model, 'sft'));
  });

  withTrainingFlags(
    train
      .command('judge')
      .description(
        'train a PairRM-style judge on labelled pairs (prompt_ids, chosen_ids, rejected_ids), shown in both orders',
      )
      .requiredOption('--judge <dir>', 'the judge at the start'),
    false,
  ).action(async (f: Omit<TrainFlags, 'model'> & { judge: string }) => {
    const dir = resolve(f.judge);
    const pairs = readRecords(f.data, dir, 'pairs').map((r) => ({
      prompt: r.prompt_ids,
      chosen: r.completion_ids[0]!,
      rejected: r.completion_ids[1]!,
    }));
    const cfg = parseJudgeConfig(readConfigJson(dir), join(dir, 'config.json'));
    const weights = readWeights(dir, judgeParams(cfg), () => false, 'a duel_pairrm judge');
    const runtime = new Runtime({ workers: 1 });
    try {
      const result = await trainJudge(runtime, {
        config: cfg,
        weights,
        pairs,
        ...loopOptions(f, pairs.length, 'train judge'),
      });
      finish(f.out, result.metrics, (extraFiles) =>
        saveJudgeDir(f.out, cfg, result.weights, { tokenizerFrom: dir, extraFiles }),
      );
    } finally {
      await runtime.close();
    }
  });
}
