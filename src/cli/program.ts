/**
 * The `duel` command. Each command lives in its own module under commands/ and registers itself
 * here; later issues add serve, run, demo, sample, judge, train, model, testbed.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { packageRoot } from '../platform/paths.js';
import { registerArtifacts } from './commands/artifacts.js';
import { registerBench } from './commands/bench.js';
import { registerConfig } from './commands/config.js';
import { registerContracts } from './commands/contracts.js';
import { registerDemo } from './commands/demo.js';
import { registerJudge } from './commands/judge.js';
import { registerModel } from './commands/model.js';
import { registerRun } from './commands/run.js';
import { registerServe } from './commands/serve.js';
import { registerTestbed } from './commands/testbed.js';
import { registerTrain } from './commands/train.js';

export function version(): string {
  return (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string })
    .version;
}

export function buildProgram(): Command {
  const program = new Command('duel')
    .description('Self-play preference optimization for language models: gRPC services on ONNX Runtime')
    .version(version(), '-V, --version')
    .showHelpAfterError()
    .configureHelp({ sortSubcommands: true });
  registerContracts(program);
  registerConfig(program);
  registerBench(program);
  registerModel(program);
  registerJudge(program);
  registerTrain(program);
  registerServe(program);
  registerRun(program);
  registerArtifacts(program);
  registerDemo(program);
  registerTestbed(program);
  return program;
}
