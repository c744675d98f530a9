/**
 * What the live run page shows of a run, built either from its record (GetRun's answer) or by
 * folding its events in order. Both give the same rounds: a round's completed event carries the
 * metrics its summary gathered, so a page drawn from the record and then kept current from the
 * event stream never jumps.
 */
import { EventKind, type RunEvent } from '../gen/duel/v1/events.js';
import { type Run, RunState } from '../gen/duel/v1/runs.js';
import { isTerminal } from '../platform/run-events.js';

export interface RoundRow {
  round: number;
  /** The policy version its records were sampled from (RunSpec.max_staleness). */
  policyVersion: number;
  metrics: Record<string, number>;
}

export interface RunView {
  runId: string;
  name: string;
  algorithm: string;
  rounds: number;
  goals: Record<string, string>;
  state: RunState;
  /** Why the run failed or was cancelled. */
  message: string;
  createdAt: Date | undefined;
  /** When the page last learned something (an event's time, or the record's update). */
  updatedAt: Date | undefined;
  /** Completed rounds by number. */
  completed: Map<number, RoundRow>;
  /** The latest stage each unfinished round reached. */
  inFlight: Map<number, EventKind>;
  /** The policy version each round sampled from, as its started event said. */
  sampledFrom: Map<number, number>;
}

export function viewOfRun(run: Run): RunView {
  const spec = run.spec;
  const view: RunView = {
    runId: run.runId,
    name: spec?.name ?? '',
    algorithm: spec?.algorithm ?? '',
    rounds: spec?.rounds ?? 0,
    goals: { ...spec?.goals },
    state: run.state,
    message: run.message,
    createdAt: run.createdAt,
    updatedAt: run.updatedAt,
    completed: new Map(),
    inFlight: new Map(),
    sampledFrom: new Map(run.rounds.map((s) => [s.round, s.policyVersion])),
  };
  for (const s of run.rounds) {
    if (s.finishedAt && s.startedAt)
      view.completed.set(s.round, {
        round: s.round,
        policyVersion: s.policyVersion,
        metrics: {
          ...s.metrics?.values,
          round_seconds: (s.finishedAt.getTime() - s.startedAt.getTime()) / 1000,
        },
      });
    else if (run.currentRound === s.round) view.inFlight.set(s.round, run.currentStage);
  }
  return view;
}

const ENDED: Partial<Record<EventKind, RunState>> = {
  [EventKind.EVENT_KIND_RUN_FINISHED]: RunState.RUN_STATE_SUCCEEDED,
  [EventKind.EVENT_KIND_RUN_FAILED]: RunState.RUN_STATE_FAILED,
  [EventKind.EVENT_KIND_RUN_CANCELLED]: RunState.RUN_STATE_CANCELLED,
};

/** Applies one event (in the run's order) to `view`. */
export function foldEvent(view: RunView, e: RunEvent): void {
  view.updatedAt = e.time ?? view.updatedAt;
  if (isTerminal(e.kind)) {
    view.state = ENDED[e.kind]!;
    view.message = e.message;
    view.inFlight.clear();
    return;
  }
  if (e.kind === EventKind.EVENT_KIND_RUN_CREATED) view.state = RunState.RUN_STATE_RUNNING;
  if (e.round === 0) return;
  if (e.kind === EventKind.EVENT_KIND_ROUND_COMPLETED) {
    view.inFlight.delete(e.round);
    // The completed event names the version the round trained (its own number), not the one it
    // sampled; the started event said which one that was.
    view.completed.set(e.round, {
      round: e.round,
      policyVersion: view.sampledFrom.get(e.round) ?? e.round - 1,
      metrics: { ...e.metrics?.values },
    });
    return;
  }
  if (e.kind === EventKind.EVENT_KIND_ROUND_STARTED) view.sampledFrom.set(e.round, e.policyVersion);
  if (!view.completed.has(e.round)) view.inFlight.set(e.round, e.kind);
}
