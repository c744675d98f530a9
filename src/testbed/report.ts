/** The run report: a table per round and SVG charts, as one self-contained HTML file. */
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { REPORT_CSS } from '../report/run-page.js';
import { esc, fixed, lineChart, stackedBars } from '../report/svg.js';
import type { DemoSummary } from './demo.js';

const f = fixed;

/** A settings object as `key: value` pairs, nested ones flattened with dots: short lines that wrap. */
function formatSettings(v: unknown, prefix = ''): string {
  if (v === null || typeof v !== 'object') return `${prefix}${prefix ? ': ' : ''}${JSON.stringify(v)}`;
  return Object.entries(v as Record<string, unknown>)
    .map(([k, x]) =>
      x !== null && typeof x === 'object'
        ? formatSettings(x, `${prefix}${k}.`)
        : `${prefix}${k}: ${JSON.stringify(x)}`,
    )
    .join(', ');
}

type Oracle = DemoSummary['rounds'][number]['oracle'];

/** What the demo is held to (docs/RESULTS.md, "Where things stand"), on any policy's oracle figures. */
const DEMO_GOALS: { goal: string; met: (o: Oracle, ref: Oracle) => boolean }[] = [
  { goal: 'oracle win rate vs π_ref ≥ 0.75', met: (o) => o.win_rate_vs_ref >= 0.75 },
  { goal: "exploitability ≤ half of π_ref's", met: (o, ref) => o.exploitability <= ref.exploitability / 2 },
  { goal: 'exploitability ≤ 0.10', met: (o) => o.exploitability <= 0.1 },
];

/** The report's first lines: where the run ended against π_ref, and each goal met or not. */
function headline(s: DemoSummary): string {
  const ref = s.rounds[0]!.oracle;
  const last = s.rounds.at(-1)!;
  const avg = s.averaged_last_half;
  const cell = (o: Oracle) =>
    DEMO_GOALS.map((g) => (g.met(o, ref) ? '<td class="met">met</td>' : '<td class="missed">missed</td>'));
  const goals = DEMO_GOALS.map(
    (g, i) => `<tr><th>${esc(g.goal)}</th>${cell(last.oracle)[i]}${avg ? cell(avg.oracle)[i] : ''}</tr>`,
  ).join('');
  return `<p class="headline">After ${last.round} rounds of ${esc(s.algo)} (${Math.round(s.seconds)} s): oracle win rate vs π_ref <b>${f(last.oracle.win_rate_vs_ref)}</b>, exploitability <b>${f(last.oracle.exploitability)}</b> (π_ref: ${f(ref.exploitability)}, 0 is a Nash equilibrium)${
    avg
      ? `; the weight average of rounds ${avg.from}–${avg.to}, one model: exploitability <b>${f(avg.oracle.exploitability)}</b>`
      : ''
  }.</p>
<table class="goals"><tr><th>goal</th><th>last round</th>${avg ? '<th>weight average</th>' : ''}</tr>${goals}</table>`;
}

const COLUMNS = [
  'round',
  'win rate vs π_ref',
  'exploitability',
  'of which styles',
  'floor',
  'style entropy',
  'quality',
  'length',
  'KL to π_ref',
  'judge win rate',
  'loss',
  'seconds',
];

const oracleCells = (o: Oracle) => [
  f(o.win_rate_vs_ref),
  f(o.exploitability),
  f(o.exploitability_styles),
  f(o.exploitability_floor),
  f(o.style_entropy),
  f(o.quality),
  f(o.length, 2),
  f(o.kl_to_ref),
];

function rows(s: DemoSummary): string[][] {
  const out = s.rounds.map((r) => [
    String(r.round),
    ...oracleCells(r.oracle),
    f(r.judge.win_rate_vs_ref),
    f(r.train.loss_mean, 4),
    f(r.seconds, 1),
  ]);
  if (s.mixture) out.push(['mixture', ...oracleCells(s.mixture), '–', '–', '–']);
  if (s.mixture_last_half)
    out.push([
      `mixture ${Math.floor((s.rounds.length - 1) / 2) + 1}–${s.rounds.length - 1}`,
      ...oracleCells(s.mixture_last_half),
      '–',
      '–',
      '–',
    ]);
  const avg = s.averaged_last_half;
  if (avg) out.push([`weights avg ${avg.from}–${avg.to}`, ...oracleCells(avg.oracle), '–', '–', '–']);
  return out;
}

/** The per-round table as aligned text, for the terminal. */
export function summaryTable(s: DemoSummary): string {
  const all = [COLUMNS, ...rows(s)];
  const widths = COLUMNS.map((_, c) => Math.max(...all.map((r) => r[c]!.length)));
  return all.map((r) => r.map((cell, c) => cell.padStart(widths[c]!)).join('  ')).join('\n');
}

/** File names of the report's charts, in the order writeReport draws them. */
const CHART_FILES = ['win-rate', 'exploitability', 'styles', 'loss', 'quality'];

export function writeReport(path: string, s: DemoSummary): void {
  const rs = s.rounds;
  const charts = [
    lineChart({
      title: 'Oracle win rate vs π_ref',
      xLabel: 'round',
      yMin: 0,
      yMax: 1,
      series: [
        { name: 'oracle (P*)', points: rs.map((r) => [r.round, r.oracle.win_rate_vs_ref]) },
        {
          name: "run's judge",
          points: rs.filter((r) => r.round > 0).map((r) => [r.round, r.judge.win_rate_vs_ref ?? Number.NaN]),
          dashed: true,
        },
      ],
    }),
    lineChart({
      title: 'Exploitability (0 = Nash equilibrium)',
      xLabel: 'round',
      yMin: 0,
      series: [
        { name: 'last iterate', points: rs.map((r) => [r.round, r.oracle.exploitability]) },
        {
          name: 'of which styles (every sample full quality)',
          points: rs.map((r) => [r.round, r.oracle.exploitability_styles]),
        },
        {
          name: 'regularised floor',
          points: rs.map((r) => [r.round, r.oracle.exploitability_floor]),
          dashed: true,
        },
        ...(s.tabular
          ? [
              {
                name: 'perfect update (tabular, styles only)',
                points: s.tabular.last.map((e, t) => [t, e] as [number, number]),
                dashed: true,
              },
            ]
          : []),
        ...(s.mixture
          ? [
              {
                name: 'round mixture',
                points: [[rs.length - 1, s.mixture.exploitability] as [number, number]],
              },
            ]
          : []),
        ...(s.mixture_last_half
          ? [
              {
                name: 'mixture of the last half',
                points: [[rs.length - 1, s.mixture_last_half.exploitability] as [number, number]],
              },
            ]
          : []),
        ...(s.averaged_last_half
          ? [
              {
                name: 'weight average of the last half (one model)',
                points: [[rs.length - 1, s.averaged_last_half.oracle.exploitability] as [number, number]],
              },
            ]
          : []),
      ],
    }),
    stackedBars({
      title: 'Style distribution per round',
      xLabel: 'round',
      bars: rs.map((r) => ({ x: r.round, shares: r.oracle.style_distribution })),
      names: Array.from({ length: s.game.n_styles }, (_, i) => `style ${i}`),
    }),
    lineChart({
      title: 'Training loss (mean over the round)',
      xLabel: 'round',
      series: [
        {
          name: 'loss',
          points: rs.filter((r) => r.round > 0).map((r) => [r.round, r.train.loss_mean ?? Number.NaN]),
        },
      ],
    }),
    lineChart({
      title: 'Quality and KL to π_ref',
      xLabel: 'round',
      yMin: 0,
      series: [
        { name: 'quality', points: rs.map((r) => [r.round, r.oracle.quality]) },
        { name: 'KL(π‖π_ref)', points: rs.map((r) => [r.round, r.oracle.kl_to_ref]) },
      ],
    }),
  ];
  const table = `<table class="rounds"><tr>${COLUMNS.map((c) => `<th>${c}</th>`).join('')}</tr>${rows(s)
    .map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join('')}</tr>`)
    .join('')}</table>`;
  const fid = `<p>Learned judge against P* on 1000 held-out pairs: agreement ${f(s.judge_fidelity.agreement)}, Brier score ${f(s.judge_fidelity.brier)}, style cycle reproduced: ${s.judge_fidelity.cycle_reproduced ? 'yes' : 'no'} (P(s ≻ s+1) = ${s.judge_fidelity.cycle_probs.map((p) => f(p)).join(', ')}). The run used the ${s.judge} judge.</p>`;
  const settings: [string, unknown][] = [
    ['judge', s.judge],
    [
      'bus',
      s.bus === 'nats'
        ? 'a nats-server of its own'
        : "the orchestrator's in-process bus (no nats-server installed)",
    ],
    [
      'computed in',
      s.dtype === 'float16' ? 'float16 (training: float32 master weights, loss scaled)' : s.dtype,
    ],
    ['hyper-parameters', s.hyperparameters],
    ['run settings', s.run_settings],
    ['game', s.game],
    ['seconds', Math.round(s.seconds)],
  ];
  const settingsTable = `<table class="settings">${settings
    .map(([k, v]) => `<tr><th>${k}</th><td>${esc(typeof v === 'string' ? v : formatSettings(v))}</td></tr>`)
    .join('')}</table>`;
  const html = `<!doctype html>
<html><head><meta charset="utf-8"><title>duel demo: ${s.algo}</title>
<style>${REPORT_CSS}</style></head>
<body><h1>duel demo: ${s.algo} on the letters game</h1>
${headline(s)}
<h2>Charts</h2>
<p>Every number is from the true preference P*, except the run's judge's.</p>
<div class="charts">${charts.join('\n')}</div>
${fid}
<h2>Settings</h2>
${settingsTable}
<h2>Every round</h2>
${table}
</body></html>
`;
  writeFileSync(path, html);
  // Each chart on its own too, for documents that compare runs (docs/RESULTS.md copies them).
  for (const [i, name] of CHART_FILES.entries())
    writeFileSync(join(dirname(path), `${name}.svg`), charts[i]!);
}
