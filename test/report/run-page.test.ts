/**
 * The live run page's report: the same rounds whether drawn from a run's record or from folding
 * its events, goals judged on the latest round that reports them, and a long run's page laid out
 * in Chromium with nothing clipped.
 */
import { describe, expect, it } from 'vitest';
import { EventKind, RunEvent } from '../../src/gen/duel/v1/events.js';
import { Run, RunState } from '../../src/gen/duel/v1/runs.js';
import { runPage, runReport } from '../../src/report/run-page.js';
import { foldEvent, viewOfRun } from '../../src/report/run-view.js';
import { renderInChromium } from '../helpers/browser.js';

const T0 = Date.parse('2026-12-06T10:00:00Z');
const at = (s: number) => new Date(T0 + s * 1000);

/** Round r's figures: a win rate that climbs, a loss that falls, a KL estimate that dips below 0. */
const figures = (r: number): Record<string, number> => ({
  win_rate_vs_ref: 0.5 + 0.01 * r,
  win_rate_vs_prev: 0.52,
  loss_mean: 0.7 - 0.01 * r,
  loss_last: 0.69 - 0.01 * r,
  kl_to_ref: r % 3 === 0 ? -0.002 : 0.01 * r,
  completions: 96,
  pairs: 1056,
  mean_length: 7.5,
  sample_seconds: 1.2,
  score_seconds: 0.8,
  train_seconds: 3.1,
  eval_seconds: 0.9,
});

const SPEC = {
  name: 'letters',
  algorithm: 'inpo',
  rounds: 40,
  goals: { win_rate_vs_ref: '>= 0.75', loss_mean: '< 0.5', kl_to_ref: '<= 1' },
};

/** A run record after `done` rounds, round done+1 trained but not evaluated. */
function record(done: number): Run {
  return Run.fromPartial({
    runId: 'letters-1',
    spec: SPEC,
    state: RunState.RUN_STATE_RUNNING,
    currentRound: done + 1,
    currentStage: EventKind.EVENT_KIND_ROUND_TRAINED,
    createdAt: at(0),
    updatedAt: at(10 * done + 5),
    rounds: [
      ...Array.from({ length: done }, (_, i) => ({
        round: i + 1,
        policyVersion: i,
        startedAt: at(10 * i),
        finishedAt: at(10 * i + 7),
        metrics: { values: figures(i + 1) },
      })),
      { round: done + 1, policyVersion: done, startedAt: at(10 * done), metrics: { values: {} } },
    ],
  });
}

/** The events of the same run, in order. */
function events(done: number): RunEvent[] {
  const ev = (kind: EventKind, round: number, s: number, values: Record<string, number> = {}) =>
    RunEvent.fromPartial({
      runId: 'letters-1',
      kind,
      round,
      time: at(s),
      policyVersion: round - 1,
      metrics: { values },
    });
  const out = [ev(EventKind.EVENT_KIND_RUN_CREATED, 0, 0)];
  for (let r = 1; r <= done + 1; r++) {
    const s = 10 * (r - 1);
    out.push(ev(EventKind.EVENT_KIND_ROUND_STARTED, r, s), ev(EventKind.EVENT_KIND_ROUND_TRAINED, r, s + 5));
    if (r <= done)
      out.push(ev(EventKind.EVENT_KIND_ROUND_COMPLETED, r, s + 7, { ...figures(r), round_seconds: 7 }));
  }
  return out;
}

describe('the live run page', () => {
  it('draws the same report from the record as from the events', () => {
    const fromRecord = viewOfRun(record(12));
    const folded = viewOfRun(Run.fromPartial({ runId: 'letters-1', spec: SPEC, createdAt: at(0) }));
    for (const e of events(12)) foldEvent(folded, e);
    const now = at(200);
    expect(runReport(folded, now)).toBe(runReport(fromRecord, now));
    const html = runReport(fromRecord, now);
    expect(html).toContain('data-rounds-completed="12"');
    expect(html).toContain('12 of 40 rounds completed (round 13 trained)');
    // 7 s a round from the record's start and finish times, 28 rounds to go.
    expect(html).toContain('7.0 s a round, about 3 min 16 s to go');
  });

  it('judges each goal on the latest round that reports its metric', () => {
    const v = viewOfRun(record(30));
    v.goals.eval_length = '> 3';
    const rows = [...runReport(v).matchAll(/<tr><th>([^<]+)<\/th><td>([^<]+)<\/td><td class="(\w+)">/g)].map(
      (m) => [m[1], m[2], m[3]],
    );
    expect(rows).toEqual([
      ['win_rate_vs_ref &gt;= 0.75', '0.800 (round 30)', 'met'],
      ['loss_mean &lt; 0.5', '0.400 (round 30)', 'met'],
      ['kl_to_ref &lt;= 1', '-0.002 (round 30)', 'met'],
      ['eval_length &gt; 3', '–', 'pending'],
    ]);
    const early = runReport(viewOfRun(record(5)));
    expect(early).toMatch(/win_rate_vs_ref &gt;= 0.75<\/th><td>0.550 \(round 5\)<\/td><td class="missed">/);
  });

  it('says why a run failed, and that no round has completed yet', () => {
    const v = viewOfRun(record(0));
    foldEvent(
      v,
      RunEvent.fromPartial({
        runId: 'letters-1',
        kind: EventKind.EVENT_KIND_RUN_FAILED,
        message: 'trainer <gone>',
      }),
    );
    const html = runReport(v);
    expect(html).toContain('data-state="failed"');
    expect(html).toContain('No round has completed yet.');
    expect(html).toContain('trainer &lt;gone&gt;');
  });

  it("lays out a 40-round run's page with nothing clipped or overlapping", () => {
    const v = viewOfRun(record(40));
    foldEvent(
      v,
      RunEvent.fromPartial({ runId: 'letters-1', kind: EventKind.EVENT_KIND_RUN_FINISHED, time: at(400) }),
    );
    const r = renderInChromium(runPage(v, 'letters-1/events'));
    expect(r.clipped).toEqual([]);
    expect(r.overlappingTicks).toEqual([]);
    expect(r.overflowX).toBe(0);
    expect(r.outline).toEqual([
      'duel run letters-1: inpo (letters)',
      'table.goals',
      'Charts',
      'svg',
      'svg',
      'svg',
      'svg',
      'Every round',
      'table.rounds',
    ]);
  });
});
