/**
 * The run event log on JetStream: one protobuf RunEvent per stage, on
 * `duel.run.<run>.round.<n>.<stage>` or `duel.run.<run>.<kind>`, with message id
 * `<run>/<n>/<stage>` (`<run>/-/<kind>`). A stage's event is published at most once, however
 * often a restarted orchestrator reaches that stage again.
 */
import { RunEvent } from '../../src/gen/duel/v1/events.js';
import type { EventLog } from '../../src/platform/bus.js';
import { cloudEventHeaders } from '../../src/platform/cloudevents.js';
import {
  durationNanos,
  ensureStream,
  JetStreamEventLog,
  type NatsConnection,
  replicasOf,
} from '../../src/platform/nats.js';
import { eventAddress, eventType, isTerminal, NO_RUN } from '../../src/platform/run-events.js';
import { traceHeaders } from '../../src/platform/tracing.js';

export const RUNS_STREAM = 'DUEL_RUNS';

/**
 * Every event is also a binary-mode CloudEvent (its message id as `id`, the run as `subject`), so
 * a pipeline's CloudEvents consumer (Knative's, Argo's) takes run events as they are.
 */
const headersOf = (e: RunEvent, id: string) => ({
  ...cloudEventHeaders({
    id,
    source: '/duel/orchestrator',
    type: eventType(e.kind),
    subject: e.runId,
    ...(e.time ? { time: e.time } : {}),
    contentType: 'application/protobuf',
  }),
  // The span that reached this stage (W3C and the CloudEvents tracing extension): a consumer
  // continues the run's trace from its events.
  ...traceHeaders(),
});

export class RunEvents {
  constructor(private readonly log: EventLog) {}

  /** Opens the log on JetStream, creating the stream (file storage, 1 h duplicate window) when missing. */
  static async open(nc: NatsConnection, duplicateWindowMs = 3_600_000): Promise<RunEvents> {
    const jsm = await nc.jetstreamManager();
    await ensureStream(jsm, {
      name: RUNS_STREAM,
      subjects: ['duel.run.>'],
      duplicate_window: durationNanos(duplicateWindowMs),
      num_replicas: replicasOf(nc),
    });
    return new RunEvents(new JetStreamEventLog(nc.jetstream(), jsm, RUNS_STREAM));
  }

  /** Publishes `event` unless its stage was published before; resolves to whether this call did. */
  emit(event: RunEvent): Promise<boolean> {
    const { subject, msgId } = eventAddress(event);
    return this.log.publishOnce(subject, RunEvent.encode(event).finish(), msgId, headersOf(event, msgId));
  }

  /**
   * Publishes an answer that may repeat on its subject (a `rejected`: the same run id may be
   * refused again, or accepted later), once per control message: `messageId` names that message,
   * so its redelivery after a crash is not answered twice. A run id that is not one (the message's
   * id was missing or malformed) is answered on `duel.run._.rejected`.
   */
  answer(event: RunEvent, messageId: string): Promise<boolean> {
    const { subject, msgId } = eventAddress({ ...event, runId: event.runId || NO_RUN });
    const id = `${msgId}/${messageId}`;
    return this.log.publish(subject, RunEvent.encode(event).finish(), id, headersOf(event, id));
  }

  /** The run's events in order (all of them, or those from now on) until its terminal one or `signal`. */
  async *watch(runId: string, fromStart: boolean, signal: AbortSignal): AsyncIterable<RunEvent> {
    for await (const data of this.log.follow(`duel.run.${runId}.>`, fromStart, signal)) {
      const event = RunEvent.decode(data);
      yield event;
      if (isTerminal(event.kind)) break;
    }
  }
}
