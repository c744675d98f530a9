/**
 * The run event log on JetStream: one protobuf RunEvent per stage, on
 * `duel.run.<run>.round.<n>.<stage>` or `duel.run.<run>.<kind>`, with message id
 * `<run>/<n>/<stage>` (`<run>/-/<kind>`). A stage's event is published at most once, however
 * often a restarted orchestrator reaches that stage again.
 */
import { RunEvent } from '../../src/gen/duel/v1/events.js';
import {
  durationNanos,
  ensureStream,
  followSubject,
  type JetStreamClient,
  type JetStreamManager,
  type NatsConnection,
  publishOnce,
} from '../../src/platform/nats.js';
import { eventAddress, isTerminal } from '../../src/platform/run-events.js';

export const RUNS_STREAM = 'DUEL_RUNS';

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
