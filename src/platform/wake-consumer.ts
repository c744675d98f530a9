/**
 * The trainer's wake-up queue for scale-from-zero (KEDA's nats-jetstream trigger): a durable pull
 * consumer on the run stream that holds every `round.<n>.scored` event, i.e. every round waiting
 * to be trained. The orchestrator creates it (it owns the stream, and a trainer at zero replicas
 * cannot); the trainer acknowledges a run's scored events up to the round it just trained, so the
 * consumer's pending count, the lag KEDA scales on, is the number of rounds waiting.
 */
import { AckPolicy, DeliverPolicy, type JetStreamClient, type JetStreamManager, nanos } from 'nats';

const WAKE_SUBJECT = 'duel.run.*.round.*.scored';

export async function ensureWakeConsumer(
  jsm: JetStreamManager,
  stream: string,
  durable: string,
): Promise<void> {
  try {
    await jsm.consumers.info(stream, durable);
  } catch (e) {
    if ((e as { code?: string }).code !== '404') throw e;
    await jsm.consumers.add(stream, {
      durable_name: durable,
      filter_subject: WAKE_SUBJECT,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.New,
      // Fetched but unacknowledged (another run's round) comes back quickly.
      ack_wait: nanos(10_000),
    });
  }
}

/**
 * Acknowledges the scored events of `runId` for rounds up to `round`; others are handed back at
 * once (nak). Resolves to how many were acknowledged.
 */
export async function ackTrained(
  js: JetStreamClient,
  stream: string,
  durable: string,
  runId: string,
  round: number,
): Promise<number> {
  let acked = 0;
  // no_wait: what is pending now, at once; the training call's answer must not wait on this.
  const batch = js.fetch(stream, durable, { batch: 256, no_wait: true });
  for await (const m of batch) {
    const parts = m.subject.split('.');
    // duel.run.<run>.round.<n>.scored
    if (parts[2] === runId && Number(parts[4]) <= round) {
      m.ack();
      acked++;
    } else m.nak();
  }
  return acked;
}
