/**
 * Run records, one protobuf Run per run id, changed only by compare-and-set, so the record is the
 * orchestrator's durable memory: a restarted orchestrator reads it and continues where the last one
 * stopped. On NATS: the JetStream KV bucket `duel_runs`; on the in-process bus: this process's memory.
 */
import { Run } from '../../src/gen/duel/v1/runs.js';
import type { RecordStore } from '../../src/platform/bus.js';
import { MemoryRecordStore } from '../../src/platform/memory-bus.js';
import { CasStore, type NatsConnection } from '../../src/platform/nats.js';

const RUNS_BUCKET = 'duel_runs';

export type RunStore = RecordStore<Run>;

const encode = (r: Run) => Run.encode(r).finish();
const decode = (b: Uint8Array) => Run.decode(b);

export function openRunStore(nc: NatsConnection): Promise<RunStore> {
  return CasStore.open<Run>(nc, RUNS_BUCKET, encode, decode);
}

export function memoryRunStore(): RunStore {
  return new MemoryRecordStore<Run>(encode, decode);
}
