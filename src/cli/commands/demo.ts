/** `duel demo`: the testbed end to end (src/testbed/demo.ts), with its table printed at the end. */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Command } from 'commander';
import { parseSets } from '../../algorithms/recipes/index.js';
import { type ComputeDtype, cpuLimit } from '../../engine/index.js';
import { DuelError } from '../../errors.js';
import { DEMO_DEFAULTS, runDemo } from '../../testbed/demo.js';
import { summaryTable } from '../../testbed/report.js';
import { intFlag } from '../flags.js';
import { cliRuntime, dtypeOption } from '../runtime.js';

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description(
      'build the testbed, run self-play rounds through all four services, grade them with the oracle',
    )
    .option('--algo <name>', 'algorithm', DEMO_DEFAULTS.algo)
    .option('--rounds <n>', 'rounds', intFlag('--rounds', 1), DEMO_DEFAULTS.rounds)
    .option('--seed <n>', 'seed', intFlag('--seed', 0), 1)
    .option('--judge <kind>', 'the judge the run uses: learned or oracle', DEMO_DEFAULTS.judge)
    .option(
      '--set <key=value>',
      'game.*, model.*, judge.*, data.*, run.* or an algorithm key (repeatable)',
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .option('--out <dir>', 'where to write the report (default ./runs/<id>)')
    .option(...dtypeOption('what the run’s sampler, scorer and trainer compute in'))
    .option(
      '--bus <kind>',
      'auto (a nats-server of its own when installed, else the in-process bus), nats or memory',
      'auto',
    )
    .action(
      async (o: {
        algo: string;
        rounds: number;
        seed: number;
        judge: string;
        set: string[];
        out?: string;
        bus: string;
        dtype?: ComputeDtype;
      }) => {
        if (o.judge !== 'learned' && o.judge !== 'oracle')
          throw DuelError.invalidArgument([
            { field: '--judge', description: `must be learned or oracle, got '${o.judge}'` },
          ]);
        if (o.bus !== 'auto' && o.bus !== 'nats' && o.bus !== 'memory')
          throw DuelError.invalidArgument([
            { field: '--bus', description: `must be auto, nats or memory, got '${o.bus}'` },
          ]);
        const out =
          o.out ??
          join(
            'runs',
            `${o.algo}-${new Date().toISOString().slice(0, 10)}-${randomBytes(3).toString('hex')}`,
          );
        const runtime = cliRuntime({ workers: Math.max(1, Math.min(cpuLimit(), 2)), intraOpThreads: 1 });
        try {
          const summary = await runDemo({
            algo: o.algo,
            rounds: o.rounds,
            seed: o.seed,
            sets: parseSets(o.set),
            out,
            judge: o.judge,
            bus: o.bus,
            runtime,
            ...(o.dtype ? { dtype: o.dtype } : {}),
            log: (l) => process.stderr.write(`${l}\n`),
          });
          process.stdout.write(
            `\n${summaryTable(summary)}\n\nreport: ${join(out, 'report.html')}\nsummary: ${join(out, 'summary.json')}\n`,
          );
        } finally {
          await runtime.close();
        }
      },
    );
}
