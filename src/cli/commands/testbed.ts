/**
 * `duel testbed compare`: the results table over algorithms, seeds, games and judges
 * (src/testbed/compare.ts); `duel testbed judge`: the learned judge alone against P*
 * (src/testbed/judge-study.ts); `duel testbed theory`: the tabular dynamics and the estimator's
 * bias (src/testbed/tabular.ts).
 */
import { join } from 'node:path';
import type { Command } from 'commander';
import { parseSets, RECIPES } from '../../algorithms/recipes/index.js';
import { cpuLimit } from '../../engine/index.js';
import { DuelError } from '../../errors.js';
import { GAMES, runCompare } from '../../testbed/compare.js';
import { referenceStyleWeights } from '../../testbed/corpus.js';
import { parseGame } from '../../testbed/game.js';
import { regularisedFloor } from '../../testbed/oracle.js';
import { pluginBias, tabularDynamics } from '../../testbed/tabular.js';
import { intFlag } from '../flags.js';
import { cliRuntime } from '../runtime.js';

const numbers = (flag: string, s: string) => {
  const xs = list(s).map(Number);
  if (xs.length === 0 || xs.some((x) => !Number.isFinite(x) || x < 0))
    throw DuelError.invalidArgument([
      { field: flag, description: `'${s}' is not a list of non-negative numbers` },
    ]);
  return xs;
};

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
      '--jobs <n>',
      'runs at once, each a demo with its own services (about a core each)',
      intFlag('--jobs', 1),
      1,
    )
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
        jobs: number;
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
        const runtime = cliRuntime({ workers: Math.max(1, Math.min(cpuLimit(), 2)), intraOpThreads: 1 });
        try {
          await runCompare({
            algos,
            rounds: o.rounds,
            seeds: o.seeds,
            judges: judges as ('oracle' | 'learned')[],
            games: list(o.games),
            sets: parseSets(o.set),
            bestOfN,
            jobs: o.jobs,
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

  testbed
    .command('judge')
    .description(
      "the learned judge alone, built as `duel demo` builds it, graded against P* on the demo's held-out pairs (JSON on stdout)",
    )
    .option('--seed <n>', 'the seed of the pairs and the initial weights', intFlag('--seed', 1), 1)
    .option(
      '--set <key=value>',
      'game.*, judge.* or data.* (repeatable), e.g. judge.kind=bt, data.judge_labels=drawn',
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .option('--out <dir>', 'where judge/ is written', join('runs', 'judge'))
    .action(async (o: { seed: number; set: string[]; out: string }) => {
      const { studyJudge } = await import('../../testbed/judge-study.js');
      const runtime = cliRuntime({ workers: 1 });
      try {
        const r = await studyJudge({
          runtime,
          sets: parseSets(o.set),
          seed: o.seed,
          out: o.out,
          log: (l) => process.stderr.write(`${l}\n`),
        });
        process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
      } finally {
        await runtime.close();
      }
    });
  testbed
    .command('overlay')
    .description('several compare results side by side, one label each: a table and a chart per algorithm')
    .argument('<label=dir...>', 'a label and the --out directory of a `duel testbed compare`')
    .option('--title <name>', 'what the labels are values of', 'setting')
    .requiredOption('--out <dir>', 'where overlay.md and plots/ go')
    .action(async (pairs: string[], o: { title: string; out: string }) => {
      const { overlayCompares } = await import('../../testbed/overlay.js');
      const runs = pairs.map((p) => {
        const at = p.indexOf('=');
        if (at <= 0)
          throw DuelError.invalidArgument([
            { field: p, description: 'must be label=dir (e.g. 1=runs/staleness-1)' },
          ]);
        return { label: p.slice(0, at), dir: p.slice(at + 1) };
      });
      process.stdout.write(overlayCompares(runs, o.out, o.title));
    });
  testbed
    .command('theory')
    .description(
      "what a perfect implementation does on the style sub-game (INPO's exact update over η and τ; τ = 0 is SPPO), and the plug-in exploitability estimate's bias",
    )
    .option('--etas <list>', 'step sizes η', '1,1.5,2,3,6,8')
    .option('--taus <list>', 'pulls toward π_ref τ (0: SPPO)', '0,0.02,0.05,0.07,0.1')
    .option('--rounds <n>', 'rounds', intFlag('--rounds', 1), 20)
    .option(
      '--reference-every <n>',
      'move the reference to the policy after every n rounds, as run.reference_update_every (0: π_ref stays)',
      intFlag('--reference-every', 0),
      0,
    )
    .option('--samples <list>', 'samples a prompt for the bias table', '4,16,64,256')
    .option('--draws <n>', 'simulated prompts per bias figure', intFlag('--draws', 1), 20_000)
    .option(
      '--set <key=value>',
      'game.* keys (repeatable)',
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .action(
      (o: {
        etas: string;
        taus: string;
        rounds: number;
        referenceEvery: number;
        samples: string;
        draws: number;
        set: string[];
      }) => {
        const sets = parseSets(o.set);
        const bad = Object.keys(sets).filter((k) => !k.startsWith('game.'));
        if (bad.length > 0)
          throw DuelError.invalidArgument([
            { field: '--set', description: `only game.* keys apply here, got ${bad.join(', ')}` },
          ]);
        const g = parseGame(Object.fromEntries(Object.entries(sets).map(([k, v]) => [k.slice(5), v])));
        const ref = referenceStyleWeights(g);
        const etas = numbers('--etas', o.etas);
        const w = (x: number) => x.toFixed(3);
        const every = o.referenceEvery;
        const reference =
          every > 0 ? `the reference moved to the policy every ${every} rounds` : 'π_ref fixed';
        const out: string[] = [
          `π_ref styles ${ref.map(w).join(' / ')}; ${reference}; ${o.rounds} rounds; cells: worst last-iterate exploitability over rounds ${o.rounds - 8}–${o.rounds - 4} / at round ${o.rounds} / uniform mixture at round ${o.rounds}`,
          '',
          `| τ (floor) | ${etas.map((e) => `η = ${e}`).join(' | ')} |`,
          `|---|${etas.map(() => '---').join('|')}|`,
        ];
        for (const tau of numbers('--taus', o.taus)) {
          const cells = etas.map((eta) => {
            if (eta * tau >= 1) return 'ητ ≥ 1';
            const r = tabularDynamics(g, ref, eta, tau, o.rounds, every);
            const window = r.last.slice(Math.max(1, o.rounds - 8), Math.max(2, o.rounds - 3));
            return `${w(Math.max(...window))} / ${w(r.last[o.rounds]!)} / ${w(r.mixture[o.rounds]!)}`;
          });
          // A reference that follows the policy makes the regularised game's fixed point the Nash
          // equilibrium itself: the floor of τ = 0, as the demo reports it.
          const floor = regularisedFloor(g, ref, every > 0 ? 0 : tau).exploitability;
          out.push(`| ${tau} (${w(floor)}) | ${cells.join(' | ')} |`);
        }
        out.push('', '| samples a prompt | plug-in exploitability of an exact equilibrium |', '|---:|---:|');
        for (const n of numbers('--samples', o.samples))
          out.push(`| ${n} | ${w(pluginBias(g, Math.max(1, Math.round(n)), o.draws, 7))} |`);
        process.stdout.write(`${out.join('\n')}\n`);
      },
    );
}
