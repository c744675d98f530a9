/**
 * Run records in the JetStream KV bucket `duel_runs`, one protobuf Run per run id, changed only by
 * compare-and-set (src/platform/nats.ts), so the record is the orchestrator's durable memory: a
 * restarted orchestrator reads it and continues where the last one stopped.
 */
import { Run } from '../../src/gen/duel/v1/runs.js';
import { CasStore, type NatsConnection } from '../../src/platform/nats.js';

export const RUNS_BUCKET = 'duel_runs';

export type RunStore = CasStore<Run>;

export function openRunStore(nc: NatsConnection): Promise<RunStore> {
  return CasStore.open<Run>(
    nc.jetstream(),
    RUNS_BUCKET,
    (r) => Run.encode(r).finish(),
    (b) => Run.decode(b),
  );
}
