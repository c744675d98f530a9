/**
 * `duel testbed overlay`: several `duel testbed compare` results side by side, each under a label
 * (one setting changed between them: `max_staleness=0`, `=1`, `=2`): one table of the last round,
 * the best round and the weight average per algorithm and label, and per algorithm one chart of
 * exploitability and one of the oracle win rate per round, a line per label.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DuelError } from '../errors.js';
import { lineChart } from '../report/svg.js';
import { type CompareCell, pm } from './compare.js';

export interface Labelled {
  label: string;
  dir: string;
}

function cellsOf(l: Labelled): CompareCell[] {
  try {
    return (JSON.parse(readFileSync(join(l.dir, 'compare.json'), 'utf8')) as { cells: CompareCell[] }).cells;
  } catch (e) {
    throw DuelError.invalidArgument([
      { field: l.label, description: `no readable compare.json in ${l.dir}: ${(e as Error).message}` },
    ]);
  }
}

/** Writes overlay.md and plots/<game>-<judge>-<algo>-<metric>.svg under `out`; returns the Markdown. */
export function overlayCompares(runs: Labelled[], out: string, title: string): string {
  const all = runs.flatMap((l) => cellsOf(l).map((c) => ({ label: l.label, c })));
  const keys = [...new Set(all.map((x) => `${x.c.game}-${x.c.judge}-${x.c.algo}`))];
  mkdirSync(join(out, 'plots'), { recursive: true });
  const lines = [
    `| algorithm | ${title} | seeds | win rate vs π_ref (last) | exploitability (last) | best round | weight average | floor |`,
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const key of keys) {
    const group = all.filter((x) => `${x.c.game}-${x.c.judge}-${x.c.algo}` === key);
    for (const { label, c } of group) {
      const last = c.rounds[c.rounds.length - 1]!;
      lines.push(
        `| ${c.algo} (${c.game}, ${c.judge}) | ${label} | ${c.seeds} | ${pm(last.win_rate_vs_ref)} | ${pm(last.exploitability)} | ${pm(c.best_exploitability)} | ${pm(c.averaged?.exploitability)} | ${c.floor.toFixed(3)} |`,
      );
    }
    for (const [metric, name] of [
      ['exploitability', 'Exploitability, last iterate'],
      ['win_rate_vs_ref', 'Oracle win rate vs π_ref'],
    ] as const)
      writeFileSync(
        join(out, 'plots', `${key}-${metric}.svg`),
        lineChart({
          title: `${name} (mean over seeds): ${group[0]!.c.algo}, by ${title}`,
          xLabel: 'round',
          yMin: 0,
          ...(metric === 'win_rate_vs_ref' ? { yMax: 1 } : {}),
          series: group.map(({ label, c }) => ({
            name: `${title} ${label}`,
            points: c.rounds.map((r, i): [number, number] => [i, r[metric].mean]),
          })),
        }),
      );
  }
  const md = `${lines.join('\n')}\n`;
  writeFileSync(join(out, 'overlay.md'), md);
  return md;
}
