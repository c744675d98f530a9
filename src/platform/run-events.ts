/**
 * The event vocabulary of runs (events.proto): each event kind's subject word, subject and
 * JetStream message id. Shared by the orchestrator that publishes and every client that reads.
 */

import { DuelError } from '../errors.js';
import { EventKind, type RunEvent } from '../gen/duel/v1/events.js';
import { RunState } from '../gen/duel/v1/runs.js';

const ROUND_STAGES: Partial<Record<EventKind, string>> = {
  [EventKind.EVENT_KIND_ROUND_STARTED]: 'started',
  [EventKind.EVENT_KIND_ROUND_SAMPLED]: 'sampled',
  [EventKind.EVENT_KIND_ROUND_SCORED]: 'scored',
  [EventKind.EVENT_KIND_ROUND_TRAINED]: 'trained',
  [EventKind.EVENT_KIND_ROUND_EVALUATED]: 'evaluated',
  [EventKind.EVENT_KIND_ROUND_COMPLETED]: 'completed',
  [EventKind.EVENT_KIND_ROUND_FAILED]: 'failed',
};
const RUN_KINDS: Partial<Record<EventKind, string>> = {
  [EventKind.EVENT_KIND_RUN_ACCEPTED]: 'accepted',
  [EventKind.EVENT_KIND_RUN_REJECTED]: 'rejected',
  [EventKind.EVENT_KIND_RUN_CREATED]: 'created',
  [EventKind.EVENT_KIND_RUN_FINISHED]: 'finished',
  [EventKind.EVENT_KIND_RUN_FAILED]: 'failed',
  [EventKind.EVENT_KIND_RUN_CANCELLED]: 'cancelled',
};

/** The stage or kind word of an event ("sampled", "finished", ...), as in its subject. */
export const eventName = (kind: EventKind): string => ROUND_STAGES[kind] ?? RUN_KINDS[kind] ?? String(kind);

/**
 * The CloudEvents `type` of an event kind: `dev.duel.run.<kind>` for a run's, and
 * `dev.duel.run.round.<stage>` for a round's (`dev.duel.run.round.trained`).
 */
export const eventType = (kind: EventKind): string =>
  ROUND_STAGES[kind] ? `dev.duel.run.round.${ROUND_STAGES[kind]}` : `dev.duel.run.${eventName(kind)}`;

/** A run state's word ("running", "succeeded", ...), as answers and `duel runs` print it. */
export const stateName = (s: RunState): string => RunState[s].replace('RUN_STATE_', '').toLowerCase();

/** The last event of a run: after it, a watch ends. */
export const isTerminal = (kind: EventKind) =>
  kind === EventKind.EVENT_KIND_RUN_FINISHED ||
  kind === EventKind.EVENT_KIND_RUN_FAILED ||
  kind === EventKind.EVENT_KIND_RUN_CANCELLED;

/**
 * The run-id token of the subject of an answer to a control message whose id is not a valid run
 * id: `duel.run._.rejected` (no run id starts with '_').
 */
export const NO_RUN = '_';

/** The event's subject and message id. */
export function eventAddress(e: Pick<RunEvent, 'runId' | 'kind' | 'round'>): {
  subject: string;
  msgId: string;
} {
  const stage = ROUND_STAGES[e.kind];
  if (stage)
    return {
      subject: `duel.run.${e.runId}.round.${e.round}.${stage}`,
      msgId: `${e.runId}/${e.round}/${stage}`,
    };
  const kind = RUN_KINDS[e.kind];
  if (!kind) throw DuelError.internal(`no subject for event kind ${e.kind}`);
  return { subject: `duel.run.${e.runId}.${kind}`, msgId: `${e.runId}/-/${kind}` };
}
