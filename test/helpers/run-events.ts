/** A run's events as an independent JetStream consumer sees them, from its first to its last. */
import { RunEvent } from '../../src/gen/duel/v1/events.js';
import { followSubject, type NatsConnection } from '../../src/platform/nats.js';
import { isTerminal } from '../../src/platform/run-events.js';

export interface SeenEvent {
  subject: string;
  event: RunEvent;
}

/**
 * Every event of run `runId` in order until its terminal one (finished, failed, cancelled),
 * calling `onEvent` on each as it arrives (awaited, so a test can act mid-run).
 */
export async function eventsUntilEnd(
  nc: NatsConnection,
  runId: string,
  onEvent: (subject: string, event: RunEvent) => unknown = () => {},
): Promise<SeenEvent[]> {
  const sub = await followSubject(nc.jetstream(), `duel.run.${runId}.>`, true);
  const seen: SeenEvent[] = [];
  for await (const m of sub) {
    const event = RunEvent.decode(m.data);
    seen.push({ subject: m.subject, event });
    await onEvent(m.subject, event);
    if (isTerminal(event.kind)) break;
  }
  sub.unsubscribe();
  return seen;
}
