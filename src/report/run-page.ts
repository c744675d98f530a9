/**
 * The live run page as HTML: a headline against the run's goals, charts and a table of every
 * completed round, drawn on the server from a RunView (run-view.ts) so the browser needs no
 * plotting code. `runPage` is the whole document; `runReport` is the part that changes, which the
 * page replaces each time the orchestrator sends a newer one over server-sent events.
 */
import { type Run, RunState } from '../gen/duel/v1/runs.js';
import { eventName, stateName } from '../platform/run-events.js';
import { goalMet, goalText, parseGoal } from '../platform/run-goals.js';
import type { RoundRow, RunView } from './run-view.js';
import { esc, fixed, lineChart, type Series } from './svg.js';

/** The look the demo's report.html and the live page share. */
export const REPORT_CSS = `body{font-family:sans-serif;max-width:1180px;margin:2em auto;padding:0 1em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}
table.rounds td{text-align:right}
table.settings{max-width:100%}table.settings th{text-align:left;white-space:nowrap;vertical-align:top}
table.settings td{overflow-wrap:anywhere;font-family:monospace}
.met{color:#1a7f37}.missed{color:#c62828}.pending{color:#777}
.charts{display:flex;flex-wrap:wrap;gap:8px}`;

const f = fixed;

/** "1 h 02 min", "3 min 20 s", "12 s". */
function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s >= 3600)
    return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
  if (s >= 60) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  return `${s} s`;
}

/** The latest completed round that reports `metric`. */
function latest(rows: RoundRow[], metric: string): RoundRow | undefined {
  return rows.findLast((r) => Number.isFinite(r.metrics[metric]));
}

function headline(v: RunView, rows: RoundRow[], now: Date): string {
  const done = rows.length;
  const running = v.state === RunState.RUN_STATE_RUNNING || v.state === RunState.RUN_STATE_PENDING;
  const inFlight = [...v.inFlight].map(([r, k]) => `round ${r} ${eventName(k)}`).join(', ');
  const parts = [
    `<b class="state">${stateName(v.state)}</b>: ${done} of ${v.rounds} rounds completed${inFlight ? ` (${inFlight})` : ''}`,
  ];
  const evaluated = latest(rows, 'win_rate_vs_ref');
  if (evaluated)
    parts.push(
      `after round ${evaluated.round} the run's judge gives the policy a win rate of <b>${f(evaluated.metrics.win_rate_vs_ref)}</b> against π_ref and <b>${f(evaluated.metrics.win_rate_vs_prev)}</b> against the round before`,
    );
  const trained = latest(rows, 'loss_mean');
  if (trained) parts.push(`training loss <b>${f(trained.metrics.loss_mean, 4)}</b>`);
  const end = running ? now : (v.updatedAt ?? now);
  if (v.createdAt) {
    const elapsed = (end.getTime() - v.createdAt.getTime()) / 1000;
    let time = `${duration(elapsed)} since it was created`;
    if (running && done > 0) {
      const perRound = rows.reduce((s, r) => s + (r.metrics.round_seconds ?? 0), 0) / done;
      time += `, ${f(perRound, 1)} s a round, about ${duration(perRound * (v.rounds - done))} to go`;
    }
    parts.push(time);
  }
  const message = v.message ? `<p class="missed">${esc(v.message)}</p>` : '';
  return `<p class="headline">${parts.join('; ')}.</p>${message}`;
}

function goalsTable(v: RunView, rows: RoundRow[]): string {
  const entries = Object.entries(v.goals);
  if (entries.length === 0)
    return '<p class="pending">The spec sets no goals (<code>goals</code> in the run spec, docs/runs.md).</p>';
  const body = entries
    .map(([metric, text]) => {
      const g = parseGoal(metric, text);
      if ('error' in g)
        return `<tr><th>${esc(metric)} ${esc(text)}</th><td colspan="2" class="missed">${esc(g.error)}</td></tr>`;
      const row = latest(rows, metric);
      const verdict = !row
        ? '<td class="pending">not reported yet</td>'
        : goalMet(g, row.metrics[metric]!)
          ? '<td class="met">met</td>'
          : '<td class="missed">missed</td>';
      return `<tr><th>${esc(goalText(g))}</th><td>${row ? `${f(row.metrics[metric])} (round ${row.round})` : '–'}</td>${verdict}</tr>`;
    })
    .join('');
  return `<table class="goals"><tr><th>goal</th><th>latest</th><th></th></tr>${body}</table>`;
}

const series = (rows: RoundRow[], name: string, metric: string, dashed = false): Series => ({
  name,
  points: rows.map((r) => [r.round, r.metrics[metric] ?? Number.NaN]),
  dashed,
});

function charts(rows: RoundRow[]): string[] {
  const out = [
    lineChart({
      title: "Win rate under the run's judge",
      xLabel: 'round',
      yMin: 0,
      yMax: 1,
      series: [
        series(rows, 'against π_ref', 'win_rate_vs_ref'),
        series(rows, 'against the round before', 'win_rate_vs_prev', true),
      ],
    }),
    lineChart({
      title: 'Training loss',
      xLabel: 'round',
      series: [
        series(rows, 'mean over the round', 'loss_mean'),
        series(rows, 'last step', 'loss_last', true),
      ],
    }),
    lineChart({
      title: 'Seconds per stage',
      xLabel: 'round',
      yMin: 0,
      series: [
        series(rows, 'sample', 'sample_seconds'),
        series(rows, 'score', 'score_seconds'),
        series(rows, 'train', 'train_seconds'),
        series(rows, 'evaluate', 'eval_seconds'),
        series(rows, 'whole round', 'round_seconds', true),
      ],
    }),
  ];
  if (rows.some((r) => Number.isFinite(r.metrics.kl_to_ref)))
    out.push(
      lineChart({
        title: 'KL(π‖π_ref)',
        xLabel: 'round',
        // A one-sample estimate: below zero when π is that close to π_ref.
        series: [series(rows, 'on one fresh sample per prompt', 'kl_to_ref')],
      }),
    );
  return out;
}

const COLUMNS: [string, string, number][] = [
  ['win rate vs π_ref', 'win_rate_vs_ref', 3],
  ['vs round before', 'win_rate_vs_prev', 3],
  ['loss', 'loss_mean', 4],
  ['KL to π_ref', 'kl_to_ref', 3],
  ['completions', 'completions', 0],
  ['pairs', 'pairs', 0],
  ['mean length', 'mean_length', 1],
  ['sample s', 'sample_seconds', 1],
  ['score s', 'score_seconds', 1],
  ['train s', 'train_seconds', 1],
  ['eval s', 'eval_seconds', 1],
  ['round s', 'round_seconds', 1],
];

function roundsTable(rows: RoundRow[]): string {
  const head = ['round', 'sampled from', ...COLUMNS.map((c) => c[0])]
    .map((c) => `<th>${esc(c)}</th>`)
    .join('');
  const body = rows
    .map(
      (r) =>
        `<tr data-round="${r.round}"><td>${r.round}</td><td>π_${r.policyVersion}</td>${COLUMNS.map(([, k, d]) => `<td>${f(r.metrics[k], d)}</td>`).join('')}</tr>`,
    )
    .join('');
  return `<table class="rounds"><tr>${head}</tr>${body}</table>`;
}

/** The part of the page that changes: headline, goals, charts and table. */
export function runReport(v: RunView, now = new Date()): string {
  const rows = [...v.completed.values()].sort((a, b) => a.round - b.round);
  const title = `duel run ${esc(v.runId)}: ${esc(v.algorithm)}${v.name ? ` (${esc(v.name)})` : ''}`;
  return `<section id="run" data-state="${stateName(v.state)}" data-rounds-completed="${rows.length}">
<h1>${title}</h1>
${headline(v, rows, now)}
${goalsTable(v, rows)}
<h2>Charts</h2>
${rows.length ? `<div class="charts">${charts(rows).join('\n')}</div>` : '<p class="pending">No round has completed yet.</p>'}
<h2>Every round</h2>
${roundsTable(rows)}
</section>`;
}

/**
 * The whole page. `events` is the address of the run's event stream relative to the page, so the
 * page works behind any path prefix an ingress adds.
 */
export function runPage(v: RunView, events: string): string {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>duel run ${esc(v.runId)}</title>
<style>${REPORT_CSS}</style></head>
<body><main id="report">${runReport(v)}</main>
<script>
const report = document.getElementById('report');
const stream = new EventSource(${JSON.stringify(events)});
stream.addEventListener('report', (e) => { report.innerHTML = e.data; });
// The run ended: the stream closes, and EventSource would otherwise reconnect and replay it.
stream.addEventListener('end', () => stream.close());
</script>
</body></html>
`;
}

/** Every run the orchestrator knows, newest first, each linking to its page. */
export function runsIndex(runs: Run[]): string {
  const rows = [...runs]
    .sort((a, b) => (b.createdAt?.getTime() ?? 0) - (a.createdAt?.getTime() ?? 0))
    .map(
      (r) =>
        `<tr><td><a href="runs/${encodeURIComponent(r.runId)}">${esc(r.runId)}</a></td><td>${esc(r.spec?.algorithm ?? '')}</td><td>${stateName(r.state)}</td><td>${r.rounds.filter((s) => s.finishedAt).length} of ${r.spec?.rounds ?? 0}</td><td>${r.createdAt?.toISOString() ?? ''}</td></tr>`,
    )
    .join('');
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>duel runs</title><style>${REPORT_CSS}</style></head>
<body><h1>duel runs</h1>
<table class="runs"><tr><th>run</th><th>algorithm</th><th>state</th><th>rounds</th><th>created</th></tr>${rows}</table>
</body></html>
`;
}
