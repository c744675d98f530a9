/**
 * Where training sessions are journaled: one record per session (changed by compare-and-set) and
 * one entry per applied mutating call since the session's last snapshot, which a restore replays.
 * On NATS both are JetStream KV buckets, so a trainer killed and restarted (on any node) finds its
 * sessions, and so does any other replica; on the in-process bus they are this process's memory
 * and die with it.
 */
import { SessionCall, TrainingSessionRecord } from '../../src/gen/duel/v1/training.js';
import type { RecordStore } from '../../src/platform/bus.js';
import { MemoryRecordStore } from '../../src/platform/memory-bus.js';
import type { NatsConnection } from '../../src/platform/nats.js';
import { TrainerLeases, type TrainerLeasesOptions } from './trainer-leases.js';

const RECORDS_BUCKET = 'duel_training_sessions';
const CALLS_BUCKET = 'duel_training_calls';

export interface SessionJournal {
  records: RecordStore<TrainingSessionRecord>;
  /** Keyed by `callKey`. */
  calls: RecordStore<SessionCall>;
  /** The largest call entry the store takes; a bigger call is covered by a snapshot instead. */
  maxCallBytes: number;
  /** Whether the journal outlives this process. */
  durable: boolean;
  /** The trainer replicas' leases, when several replicas may share the journal (NATS). */
  leases?: TrainerLeases;
}

export const callKey = (sessionId: string, seq: number) => `${sessionId}.${seq}`;

const codec = <T>(m: { encode(v: T): { finish(): Uint8Array }; decode(b: Uint8Array): T }) =>
  [(v: T) => m.encode(v).finish(), (b: Uint8Array) => m.decode(b)] as const;

export function memoryJournal(): SessionJournal {
  return {
    records: new MemoryRecordStore(...codec(TrainingSessionRecord)),
    calls: new MemoryRecordStore(...codec(SessionCall)),
    maxCallBytes: Number.POSITIVE_INFINITY,
    durable: false,
  };
}

/** The journal in JetStream KV, and this replica's lease, taken and kept renewed. */
export async function natsJournal(nc: NatsConnection, lease: TrainerLeasesOptions): Promise<SessionJournal> {
  // Loaded here, so a trainer that never journals on NATS never evaluates the NATS client.
  const { CasStore } = await import('../../src/platform/nats.js');
  const [records, calls] = await Promise.all([
    CasStore.open(nc, RECORDS_BUCKET, ...codec(TrainingSessionRecord)),
    CasStore.open(nc, CALLS_BUCKET, ...codec(SessionCall)),
  ]);
  const leases = await TrainerLeases.open(nc, lease);
  await leases.start();
  // Room for the KV message's subject and headers under the server's max_payload.
  return { records, calls, maxCallBytes: nc.info!.max_payload - 4096, durable: true, leases };
}
