/**
 * The `duel` command. Each command lives in its own module under commands/ and registers itself;
 * only the module of the command being run is imported (`duel serve sampler` never loads the
 * testbed, the trainer or the benchmarks), and all of them when there is none (`duel --help`).
 */
import { Command } from 'commander';
import { packageVersion } from '../platform/paths.js';

type Register = (program: Command) => void;

const COMMANDS: Record<string, () => Promise<Register>> = {
  contracts: async () => (await import('./commands/contracts.js')).registerContracts,
  config: async () => (await import('./commands/config.js')).registerConfig,
  bench: async () => (await import('./commands/bench.js')).registerBench,
  model: async () => (await import('./commands/model.js')).registerModel,
  // `duel sample` is registered by the model commands' module.
  sample: async () => (await import('./commands/model.js')).registerModel,
  judge: async () => (await import('./commands/judge.js')).registerJudge,
  train: async () => (await import('./commands/train.js')).registerTrain,
  serve: async () => (await import('./commands/serve.js')).registerServe,
  run: async () => (await import('./commands/run.js')).registerRun,
  runs: async () => (await import('./commands/run.js')).registerRun,
  artifacts: async () => (await import('./commands/artifacts.js')).registerArtifacts,
  demo: async () => (await import('./commands/demo.js')).registerDemo,
  testbed: async () => (await import('./commands/testbed.js')).registerTestbed,
  doctor: async () => (await import('./commands/doctor.js')).registerDoctor,
};

/** The program with the command `argv` names registered, or every command when it names none. */
export async function buildProgram(argv: readonly string[] = process.argv): Promise<Command> {
  const program = new Command('duel')
    .description('Self-play preference optimization for language models: gRPC services on ONNX Runtime')
    .version(packageVersion(), '-V, --version')
    .showHelpAfterError()
    .configureHelp({ sortSubcommands: true });
  const named = argv[2];
  const loaders = named !== undefined && named in COMMANDS ? [COMMANDS[named]!] : Object.values(COMMANDS);
  const registered = new Set<Register>();
  for (const load of loaders) {
    const register = await load();
    if (registered.has(register)) continue;
    registered.add(register);
    register(program);
  }
  return program;
}
