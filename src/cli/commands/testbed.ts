/** `duel testbed compare`: the results table over algorithms, seeds, games and judges (src/testbed/compare.ts). */
import { join } from 'node:path';
import type { Command } from 'commander';
import { parseSets, RECIPES } from '../../algorithms/recipes/index.js';
import { cpuLimit, Runtime } from '../../engine/index.js';
import { DuelError } from '../../platform/errors.js';
import { GAMES, runCompare } from '../../testbed/compare.js';
import { intFlag } from '../flags.js';

const list = (s: string) =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);

export function registerTestbed(program: Command): void {
  const testbed = program
    .command('testbed')
    .description('the letters game: compare algorithms against the oracle');
  testbed
    .command('compare')
    .description(
      'every algorithm × seed × game × judge through the suite; mean ± sd tables, charts, best-of-n',
    )
    .requiredOption('--algos <list>', 'algorithms, comma-separated (e.g. sppo,inpo,nash_md)')
    .option('--rounds <n>', 'rounds per run', intFlag('--rounds', 1), 16)
    .option('--seeds <n>', 'seeds per configuration (1..n)', intFlag('--seeds', 1), 3)
    .option('--judges <list>', 'oracle, learned or both', 'oracle,learned')
    .option('--games <list>', `games: ${Object.keys(GAMES).join(', ')}`, Object.keys(GAMES).join(','))
    .option('--best-of-n <list>', 'n values for best-of-n reranking ("" to skip)', '1,4,16')
    .option(
      '--set <key=value>',
      'game.*, model.*, judge.*, data.*, run.* or an algorithm key (repeatable)',
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .option('--out <dir>', 'where runs, compare.json, RESULTS.md and plots/ go', join('runs', 'compare'))
    .action(
      async (o: {
        algos: string;
        rounds: number;
        seeds: number;
        judges: string;
        games: string;
        bestOfN: string;
        set: string[];
        out: string;
      }) => {
        const algos = list(o.algos);
        const unknown = algos.filter((a) => !(a in RECIPES));
        if (unknown.length > 0 || algos.length === 0)
          throw DuelError.invalidArgument([
            { field: '--algos', description: `unknown algorithm(s) ${unknown.join(', ') || '(none given)'}` },
          ]);
        const judges = list(o.judges);
        if (judges.length === 0 || judges.some((j) => j !== 'oracle' && j !== 'learned'))
          throw DuelError.invalidArgument([
            { field: '--judges', description: `must be oracle and/or learned, got '${o.judges}'` },
          ]);
        const bestOfN = list(o.bestOfN).map(Number);
        if (bestOfN.some((n) => !Number.isInteger(n) || n < 1))
          throw DuelError.invalidArgument([
            { field: '--best-of-n', description: `'${o.bestOfN}' is not a list of positive integers` },
          ]);
        const runtime = new Runtime({ workers: Math.max(1, Math.min(cpuLimit(), 2)), intraOpThreads: 1 });
        try {
          await runCompare({
            algos,
            rounds: o.rounds,
            seeds: o.seeds,
            judges: judges as ('oracle' | 'learned')[],
            games: list(o.games),
            sets: parseSets(o.set),
            bestOfN,
            out: o.out,
            runtime,
            log: (l) => process.stderr.write(`${l}\n`),
          });
          process.stdout.write(`results: ${join(o.out, 'RESULTS.md')}\n`);
        } finally {
          await runtime.close();
        }
      },
    );
}
