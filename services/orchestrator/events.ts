/**
 * The run event log on JetStream: one protobuf RunEvent per stage, on
 * `duel.run.<run>.round.<n>.<stage>` or `duel.run.<run>.<kind>`, with message id
 * `<run>/<n>/<stage>` (`<run>/-/<kind>`). A stage's event is published at most once, however
 * often a restarted orchestrator reaches that stage again.
 */
import { EventKind, RunEvent } from '../../src/gen/duel/v1/events.js';
import { DuelError } from '../../src/platform/errors.js';
import {
  durationNanos,
  ensureStream,
  followSubject,
  type JetStreamClient,
  type JetStreamManager,
  type NatsConnection,
  publishOnce,
} from '../../src/platform/nats.js';

export const RUNS_STREAM = 'DUEL_RUNS';

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
  [EventKind.EVENT_KIND_RUN_CREATED]: 'created',
  [EventKind.EVENT_KIND_RUN_FINISHED]: 'finished',
  [EventKind.EVENT_KIND_RUN_FAILED]: 'failed',
  [EventKind.EVENT_KIND_RUN_CANCELLED]: 'cancelled',
};

/** The stage or kind word of an event ("sampled", "finished", ...), as in its subject. */
export const eventName = (kind: EventKind): string => ROUND_STAGES[kind] ?? RUN_KINDS[kind] ?? String(kind);

/** The last event of a run: after it, a watch ends. */
export const isTerminal = (kind: EventKind) =>
  kind === EventKind.EVENT_KIND_RUN_FINISHED ||
  kind === EventKind.EVENT_KIND_RUN_FAILED ||
  kind === EventKind.EVENT_KIND_RUN_CANCELLED;

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

export class RunEvents {
  private constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
  ) {}

  /** Opens the log, creating the stream (file storage, 1 h duplicate window) when missing. */
  static async open(nc: NatsConnection, duplicateWindowMs = 3_600_000): Promise<RunEvents> {
    const jsm = await nc.jetstreamManager();
    await ensureStream(jsm, {
      name: RUNS_STREAM,
      subjects: ['duel.run.>'],
      duplicate_window: durationNanos(duplicateWindowMs),
    });
    return new RunEvents(nc.jetstream(), jsm);
  }

  /** Publishes `event` unless its stage was published before; resolves to whether this call did. */
  emit(event: RunEvent): Promise<boolean> {
    const { subject, msgId } = eventAddress(event);
    return publishOnce(this.js, this.jsm, RUNS_STREAM, subject, RunEvent.encode(event).finish(), msgId);
  }

  /** The run's events in order (all of them, or those from now on) until its terminal one or `signal`. */
  async *watch(runId: string, fromStart: boolean, signal: AbortSignal): AsyncIterable<RunEvent> {
    const sub = await followSubject(this.js, `duel.run.${runId}.>`, fromStart);
    const stop = () => sub.unsubscribe();
    signal.addEventListener('abort', stop, { once: true });
    try {
      for await (const m of sub) {
        const event = RunEvent.decode(m.data);
        yield event;
        if (isTerminal(event.kind)) break;
      }
    } finally {
      signal.removeEventListener('abort', stop);
      sub.unsubscribe();
    }
  }
}
