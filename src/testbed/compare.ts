/**
 * `duel testbed compare`: the results table. Every (game, judge, algorithm, seed) is one `duel
 * demo` run into its own directory (a finished one is read back, so an interrupted compare
 * continues where it stopped); models are built once per game and seed and shared, and `jobs`
 * runs go at once (each demo's services are processes of their own, so runs use separate cores).
 * Then mean ± sd over seeds of the oracle metrics per round, the last iterate and the round
 * mixture, best-of-n reranking of π_ref and of each final policy, charts, compare.json and
 * RESULTS.md.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import type { Runtime } from '../engine/index.js';
import { DuelError } from '../errors.js';
import { loadJudgeDir } from '../models/judge/load.js';
import { readJsonl } from '../platform/jsonl.js';
import { LoadOnce } from '../platform/load-once.js';
import { lineChart } from '../report/svg.js';
import { type BestOfNRow, bestOfN } from './best-of-n.js';
import { buildDemoModels, DEMO_DEFAULTS, type DemoSummary, demoSettings, runDemo } from './demo.js';
import { samplePolicy } from './evaluate.js';
import { targetsOf } from './game.js';
import { OracleJudge } from './oracle-judge.js';

/** The two games of the table: docs/testbed.md's intransitive default and its transitive variant. */
export const GAMES: Record<string, Record<string, unknown>> = {
  default: {},
  transitive: { 'game.b': 0 },
};

export interface CompareOptions {
  algos: string[];
  rounds: number;
  seeds: number;
  judges: ('oracle' | 'learned')[];
  games: string[];
  sets: Record<string, unknown>;
  /** n values of the best-of-n table (empty: skip it). */
  bestOfN: number[];
  /** How many runs go at once (each is a demo with its own services, about one core's work). */
  jobs: number;
  out: string;
  runtime: Runtime;
  log: (line: string) => void;
}

/** Bumped when the oracle metrics change meaning (2: exploitability from the exact style distribution). */
const ORACLE_METRICS_VERSION = 2;

type Metric = 'win_rate_vs_ref' | 'exploitability' | 'style_entropy' | 'quality';
const METRICS: Metric[] = ['win_rate_vs_ref', 'exploitability', 'style_entropy', 'quality'];

export interface Stat {
  mean: number;
  sd: number;
}

export interface CompareCell {
  game: string;
  judge: string;
  algo: string;
  seeds: number;
  /** Per round (0 = π_ref): mean ± sd over seeds. */
  rounds: Record<Metric, Stat>[];
  mixture: Record<Metric, Stat> | undefined;
  /** One model: the weight average of the last half of the rounds (demo.ts, gradeWeightAverage). */
  averaged: Record<Metric, Stat> | undefined;
  floor: number;
  /** The lowest last-iterate exploitability over rounds 1..R, per seed, then mean ± sd. */
  best_exploitability: Stat;
  seconds: Stat;
  /**
   * Per round (0 = π_ref), each style's share of the policy's samples: mean ± sd over seeds
   * (absent from compare.json files written before it).
   */
  styles?: Stat[][];
  /** The learned judge of each seed against P* on held-out pairs (oracle.ts judgeFidelity); likewise. */
  judge_fidelity?: JudgeFidelityStats;
}

/** judgeFidelity's figures over seeds; `label_agreement_ratio` is the judge's over P*'s own. */
export interface JudgeFidelityStats {
  agreement: Stat;
  cross_entropy: Stat;
  cross_entropy_floor: Stat;
  label_agreement_ratio: Stat;
  cycle_probs: Stat[];
  cycle_truth: number[];
  cycle_reproduced: number;
}

export interface BestOfNCell {
  game: string;
  judge: string;
  policy: string;
  rows: { n: number; win_rate_vs_ref: Stat; quality: Stat; exploitability: Stat }[];
}

export function stat(xs: number[]): Stat {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const sd = xs.length < 2 ? 0 : Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (xs.length - 1));
  return { mean, sd };
}

const statsOf = (os: Record<Metric, number>[]) =>
  Object.fromEntries(METRICS.map((m) => [m, stat(os.map((o) => o[m]))])) as Record<Metric, Stat>;

function aggregate(game: string, judge: string, algo: string, runs: DemoSummary[]): CompareCell {
  const rounds = runs[0]!.rounds.map((_, r) => statsOf(runs.map((s) => s.rounds[r]!.oracle)));
  return {
    game,
    judge,
    algo,
    seeds: runs.length,
    rounds,
    mixture: runs.every((s) => s.mixture) ? statsOf(runs.map((s) => s.mixture!)) : undefined,
    averaged: runs.every((s) => s.averaged_last_half)
      ? statsOf(runs.map((s) => s.averaged_last_half!.oracle))
      : undefined,
    floor: runs[0]!.rounds[0]!.oracle.exploitability_floor,
    best_exploitability: stat(
      runs.map((s) => Math.min(...s.rounds.slice(1).map((r) => r.oracle.exploitability))),
    ),
    seconds: stat(runs.map((s) => s.seconds)),
    styles: runs[0]!.rounds.map((r, i) =>
      r.oracle.style_distribution.map((_, st) =>
        stat(runs.map((s) => s.rounds[i]!.oracle.style_distribution[st]!)),
      ),
    ),
    judge_fidelity: fidelityStats(runs.map((s) => s.judge_fidelity)),
  };
}

function fidelityStats(fs: DemoSummary['judge_fidelity'][]): JudgeFidelityStats {
  return {
    agreement: stat(fs.map((f) => f.agreement)),
    cross_entropy: stat(fs.map((f) => f.cross_entropy)),
    cross_entropy_floor: stat(fs.map((f) => f.cross_entropy_floor)),
    label_agreement_ratio: stat(fs.map((f) => f.label_agreement / f.oracle_label_agreement)),
    cycle_probs: fs[0]!.cycle_probs.map((_, k) => stat(fs.map((f) => f.cycle_probs[k]!))),
    cycle_truth: fs[0]!.cycle_truth ?? [],
    cycle_reproduced: fs.filter((f) => f.cycle_reproduced).length,
  };
}

export async function runCompare(o: CompareOptions) {
  for (const g of o.games)
    if (!GAMES[g])
      throw DuelError.invalidArgument([
        { field: '--games', description: `unknown game '${g}' (known: ${Object.keys(GAMES).join(', ')})` },
      ]);
  const out = resolve(o.out);
  mkdirSync(out, { recursive: true });
  const tasks = o.games.flatMap((game) =>
    o.judges.flatMap((judge) =>
      o.algos.flatMap((algo) =>
        Array.from({ length: o.seeds }, (_, i) => ({ game, judge, algo, seed: i + 1 })),
      ),
    ),
  );
  const t0 = Date.now();
  let done = 0;
  // Each game and seed's models are built once, before the first of its runs, and shared: runs
  // that start while the build is going wait for it instead of building beside it. The build
  // does not depend on the algorithm, hence no algorithm's run defaults ('') in its settings.
  const builds = new LoadOnce<string>();
  const modelsFor = (game: string, seed: number) => {
    const dir = join(out, 'models', `${game}-seed${seed}`);
    return builds.get(dir, () =>
      buildDemoModels(o.runtime, demoSettings('', { ...o.sets, ...GAMES[game] }), dir, seed, () => {}).then(
        () => dir,
      ),
    );
  };
  const results = await inPool(tasks, o.jobs, async ({ game, judge, algo, seed }) => {
    const dir = join(out, 'runs', `${game}-${judge}-${algo}-seed${seed}`);
    const s = await compareRun(o, { game, judge, algo, seed, dir, models: await modelsFor(game, seed) });
    done++;
    const elapsed = (Date.now() - t0) / 1000;
    const last = s.rounds[s.rounds.length - 1]!.oracle;
    o.log(
      `[${done}/${tasks.length}] ${game} ${judge} ${algo} seed ${seed}: win rate ${last.win_rate_vs_ref.toFixed(3)}, exploitability ${last.exploitability.toFixed(3)} (mixture ${s.mixture?.exploitability.toFixed(3) ?? '–'}) · ${elapsed.toFixed(0)} s, ETA ${((elapsed / done) * (tasks.length - done)).toFixed(0)} s`,
    );
    return { summary: s, dir };
  });
  const cells: CompareCell[] = [];
  const bestCells: BestOfNCell[] = [];
  for (const game of o.games)
    for (const judge of o.judges) {
      const bySeed = new Map<number, Map<string, { summary: DemoSummary; dir: string }>>();
      for (const algo of o.algos) {
        const runs: DemoSummary[] = [];
        tasks.forEach((t, i) => {
          if (t.game !== game || t.judge !== judge || t.algo !== algo) return;
          runs.push(results[i]!.summary);
          if (!bySeed.has(t.seed)) bySeed.set(t.seed, new Map());
          bySeed.get(t.seed)!.set(algo, results[i]!);
        });
        cells.push(aggregate(game, judge, algo, runs));
      }
      if (o.bestOfN.length > 0) bestCells.push(...(await bestOfNFor(o, game, judge, bySeed)));
    }
  const result = {
    algos: o.algos,
    rounds: o.rounds,
    seeds: o.seeds,
    sets: o.sets,
    cells,
    best_of_n: bestCells,
  };
  writeFileSync(join(out, 'compare.json'), `${JSON.stringify(result, null, 2)}\n`);
  writeCharts(out, cells);
  writeFileSync(join(out, 'RESULTS.md'), `${resultsMarkdown(result)}\n`);
  return result;
}

/**
 * One (game, judge, algorithm, seed) run: read back when a finished run with exactly these
 * settings is in `dir`, else run by `duel demo` on the shared models.
 */
async function compareRun(
  o: CompareOptions,
  t: { game: string; judge: 'oracle' | 'learned'; algo: string; seed: number; dir: string; models: string },
): Promise<DemoSummary> {
  const { game, judge, algo, seed, dir } = t;
  const sets = { ...o.sets, ...GAMES[game] };
  const file = join(dir, 'summary.json');
  // A finished run is reused only if it was made with exactly these settings (the demo's
  // defaults for the algorithm included), graded by this version of the oracle metrics, and
  // carries every figure the table reports (runs graded before the weight average are run again).
  const key = JSON.stringify({
    algo,
    judge,
    seed,
    rounds: o.rounds,
    sets,
    defaults: { hparams: DEMO_DEFAULTS.hparams[algo] ?? {}, run: DEMO_DEFAULTS.run[algo] ?? {} },
    oracle: ORACLE_METRICS_VERSION,
  });
  const keyFile = join(dir, 'compare-key.json');
  if (existsSync(file) && existsSync(keyFile) && readFileSync(keyFile, 'utf8') === key) {
    const s = JSON.parse(readFileSync(file, 'utf8')) as DemoSummary;
    if (s.averaged_last_half || s.rounds.length <= 2) return s;
  }
  const s = await runDemo({
    algo,
    rounds: o.rounds,
    seed,
    sets,
    out: dir,
    judge,
    runtime: o.runtime,
    modelsDir: t.models,
    log: () => {},
  });
  writeFileSync(keyFile, key);
  return s;
}

/**
 * `work` over `items` with at most `jobs` running at once, started in order; the results in the
 * items' order. The first failure is thrown once the running ones have settled, and no new item
 * starts after it. Written here rather than taken from p-map, whose stopOnError rejects while
 * the other runs (each a demo with child services) are still going.
 */
export async function inPool<T, R>(items: T[], jobs: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  let failed: { error: unknown } | undefined;
  const worker = async () => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        results[i] = await work(items[i]!);
      } catch (error) {
        failed ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(jobs, items.length)) }, worker));
  if (failed) throw failed.error;
  return results;
}

/** Best-of-n of π_ref and of every algorithm's final policy, per seed, then mean ± sd. */
async function bestOfNFor(
  o: CompareOptions,
  game: string,
  judge: 'oracle' | 'learned',
  bySeed: Map<number, Map<string, { summary: DemoSummary; dir: string }>>,
): Promise<BestOfNCell[]> {
  const perPolicy = new Map<string, BestOfNRow[][]>();
  for (const [seed, runs] of bySeed) {
    const any = [...runs.values()][0]!;
    const g = any.summary.game;
    // The held-out prompts the seed's runs were graded on, as the demo wrote them.
    const evalTargets = readJsonl(
      join(any.dir, 'eval-prompts.jsonl'),
      z.object({ prompt_ids: z.array(z.number().int()) }),
    ).map((r) => targetsOf(r.prompt_ids));
    const models = join(resolve(o.out), 'models', `${game}-seed${seed}`);
    const reference = await samplePolicy(o.runtime, g, join(models, 'ref'), evalTargets, 16, seed + 40);
    // The run's judge, the same runner the scorer serves.
    const reranker =
      judge === 'learned'
        ? (await loadJudgeDir(o.runtime, join(models, 'judge'))).judge
        : OracleJudge.fromDir(join(models, 'oracle'));
    try {
      const policies: [string, string][] = [
        ['π_ref', join(models, 'ref')],
        ...[...runs].map(([algo, r]): [string, string] => [
          `${algo} (round ${o.rounds})`,
          r.summary.final_checkpoint,
        ]),
      ];
      for (const [name, dir] of policies) {
        const rows = await bestOfN(o.runtime, g, {
          policyDir: dir,
          reference,
          targets: evalTargets,
          ns: o.bestOfN,
          groups: 4,
          seed: seed + 50,
          judge: reranker,
        });
        perPolicy.set(name, [...(perPolicy.get(name) ?? []), rows]);
        o.log(
          `best-of-n ${game} ${judge} ${name} seed ${seed}: ${rows.map((r) => `n=${r.n} ${r.win_rate_vs_ref.toFixed(3)}`).join(', ')}`,
        );
      }
    } finally {
      await reranker.release();
    }
  }
  return [...perPolicy].map(([policy, seeds]) => ({
    game,
    judge,
    policy,
    rows: o.bestOfN.map((n, i) => ({
      n,
      win_rate_vs_ref: stat(seeds.map((r) => r[i]!.win_rate_vs_ref)),
      quality: stat(seeds.map((r) => r[i]!.quality)),
      exploitability: stat(seeds.map((r) => r[i]!.exploitability)),
    })),
  }));
}

/** Cells grouped by `<game>-<judge>`, in order of first appearance. */
function byGameAndJudge(cells: CompareCell[]): Map<string, CompareCell[]> {
  const groups = new Map<string, CompareCell[]>();
  for (const c of cells)
    groups.set(`${c.game}-${c.judge}`, [...(groups.get(`${c.game}-${c.judge}`) ?? []), c]);
  return groups;
}

function writeCharts(out: string, cells: CompareCell[]): void {
  const dir = join(out, 'plots');
  mkdirSync(dir, { recursive: true });
  for (const [key, cs] of byGameAndJudge(cells)) {
    for (const [metric, title] of [
      ['exploitability', 'Exploitability, last iterate (mean over seeds)'],
      ['win_rate_vs_ref', 'Oracle win rate vs π_ref (mean over seeds)'],
    ] as const)
      writeFileSync(
        join(dir, `${key}-${metric}.svg`),
        lineChart({
          title: `${title}: ${key}`,
          xLabel: 'round',
          yMin: 0,
          ...(metric === 'win_rate_vs_ref' ? { yMax: 1 } : {}),
          series: [
            ...cs.map((c) => ({
              name: c.algo,
              points: c.rounds.map((r, i): [number, number] => [i, r[metric].mean]),
            })),
            ...(metric === 'exploitability'
              ? [
                  {
                    name: 'floor',
                    points: cs[0]!.rounds.map((_, i): [number, number] => [i, cs[0]!.floor]),
                    dashed: true,
                  },
                ]
              : []),
          ],
        }),
      );
    for (const c of cs) {
      if (!c.styles) continue;
      const styles = c.styles;
      writeFileSync(
        join(dir, `${key}-${c.algo}-styles.svg`),
        lineChart({
          title: `Style mix per round, mean over seeds: ${key} ${c.algo}`,
          xLabel: 'round',
          yMin: 0,
          yMax: 1,
          series: [
            ...styles[0]!.map((_, st) => ({
              name: `style ${st}`,
              points: styles.map((r, i): [number, number] => [i, r[st]!.mean]),
            })),
            {
              name: 'equilibrium',
              points: styles.map((_, i): [number, number] => [i, 1 / styles[0]!.length]),
              dashed: true,
            },
          ],
        }),
      );
    }
  }
}

/** A mean ± sd as the results tables print it. */
export const pm = (s: Stat | undefined, d = 3) => (s ? `${s.mean.toFixed(d)} ± ${s.sd.toFixed(d)}` : '–');

/** The learned judge's fidelity over seeds, one sentence. */
function fidelityLine(f: JudgeFidelityStats, used: boolean, seeds: number): string {
  const cycle =
    f.cycle_truth.length === 0
      ? 'this game has no style cycle'
      : `P(s ≻ s+1) ${f.cycle_probs.map((p) => pm(p, 2)).join(', ')} (P*: ${f.cycle_truth.map((t) => t.toFixed(2)).join(', ')}), cycle reproduced in ${f.cycle_reproduced} of ${seeds} seeds`;
  return `${used ? 'The learned judge the runs used' : 'The learned judge (built, not used by these runs)'}, against P* on 1 000 held-out pairs, mean ± sd over seeds: cross-entropy ${pm(f.cross_entropy)} (floor ${pm(f.cross_entropy_floor)}), agreement with P*'s side ${pm(f.agreement)}, label agreement ${pm(f.label_agreement_ratio)} of P*'s own; ${cycle}.`;
}

/** The results as Markdown tables: one per game and judge, then best-of-n. */
function resultsMarkdown(r: Awaited<ReturnType<typeof runCompare>>): string {
  const lines: string[] = [];
  for (const [key, cs] of byGameAndJudge(r.cells)) {
    const [game, judge] = key.split('-');
    lines.push(
      `### ${game} game, ${judge} judge (${cs[0]!.seeds} seeds, ${r.rounds} rounds)`,
      '',
      `| algorithm | win rate vs π_ref | exploitability (last) | best round | mixture | weight average | floor | style entropy | quality | seconds |`,
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    );
    const ref = cs[0]!.rounds[0]!;
    lines.push(
      `| π_ref | ${pm(ref.win_rate_vs_ref)} | ${pm(ref.exploitability)} | – | – | – | – | ${pm(ref.style_entropy)} | ${pm(ref.quality)} | – |`,
    );
    for (const c of cs) {
      const last = c.rounds[c.rounds.length - 1]!;
      lines.push(
        `| ${c.algo} | ${pm(last.win_rate_vs_ref)} | ${pm(last.exploitability)} | ${pm(c.best_exploitability)} | ${pm(c.mixture?.exploitability)} | ${pm(c.averaged?.exploitability)} | ${c.floor.toFixed(3)} | ${pm(last.style_entropy)} | ${pm(last.quality)} | ${c.seconds.mean.toFixed(0)} |`,
      );
    }
    const f = cs[0]!.judge_fidelity;
    lines.push(
      '',
      ...(f ? [fidelityLine(f, judge === 'learned', cs[0]!.seeds), ''] : []),
      `![exploitability](plots/${game}-${judge}-exploitability.svg) ![win rate](plots/${game}-${judge}-win_rate_vs_ref.svg)`,
      '',
      cs
        .filter((c) => c.styles)
        .map((c) => `![${c.algo} style mix](plots/${game}-${judge}-${c.algo}-styles.svg)`)
        .join(' '),
      '',
    );
  }
  if (r.best_of_n.length > 0) {
    const ns = r.best_of_n[0]!.rows.map((x) => x.n);
    lines.push(
      '### Best-of-n reranking (oracle win rate vs π_ref; quality)',
      '',
      `| game | judge | policy | ${ns.map((n) => `n = ${n}`).join(' | ')} |`,
      `| --- | --- | --- | ${ns.map(() => '---:').join(' | ')} |`,
    );
    for (const b of r.best_of_n)
      lines.push(
        `| ${b.game} | ${b.judge} | ${b.policy} | ${b.rows.map((x) => `${x.win_rate_vs_ref.mean.toFixed(3)}; ${x.quality.mean.toFixed(2)}`).join(' | ')} |`,
      );
    lines.push('');
  }
  return lines.join('\n');
}
