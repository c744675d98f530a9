/**
 * What the orchestrator needs from a message bus, as two small contracts: an append-only event log
 * with publish-at-most-once by subject and replay-and-follow by subject filter, and a record store
 * changed only by compare-and-set. NATS JetStream implements both for real deployments
 * (src/platform/nats.ts); the in-process bus (src/platform/memory-bus.ts) implements them in one
 * process's memory for `duel demo` and `duel run --local` on a machine without nats-server.
 */

/** `nats.url` value that selects the in-process bus. */
export const MEMORY_BUS_URL = 'memory:';

export const isMemoryBus = (url: string) => url === MEMORY_BUS_URL;

/** Message headers (NATS headers on JetStream; the in-process bus keeps none). */
export type Headers = Readonly<Record<string, string>>;

export interface EventLog {
  /**
   * Appends `data` on `subject` unless the log already holds a message on that subject or one
   * with `msgId`; resolves to whether this call stored it.
   */
  publishOnce(subject: string, data: Uint8Array, msgId: string, headers?: Headers): Promise<boolean>;
  /**
   * Appends `data` on `subject` unless the log holds a message with `msgId` (JetStream: within its
   * duplicate window); for answers that may repeat on one subject, as a rejected submit does.
   */
  publish(subject: string, data: Uint8Array, msgId: string, headers?: Headers): Promise<boolean>;
  /**
   * The messages whose subject matches `filter` (NATS wildcards: `*` one token, `>` the rest), in
   * order: all of them (`fromStart`) or those from now on, until `signal` aborts.
   */
  follow(filter: string, fromStart: boolean, signal: AbortSignal): AsyncIterable<Uint8Array>;
}

export interface RecordStore<T> {
  /**
   * The record; with `caughtUp`, read again while it lacks a write this process saw acknowledged
   * (as `update` reads it).
   */
  get(key: string, caughtUp?: (current: T) => boolean): Promise<{ value: T; revision: number } | undefined>;
  /** Stores `value` under a new key; resolves to false when the key exists. */
  create(key: string, value: T): Promise<boolean>;
  /**
   * Applies `change` to the current value and writes it if nobody wrote in between, retrying
   * otherwise; `change` returning undefined leaves the record as it is. `caughtUp`, when given,
   * says whether a value read holds what this process already saw written; one that does not
   * comes from a server that has not applied it yet (a stream leader just elected) and is read
   * again, so `change` never judges a write of its own to be someone else's.
   */
  update(key: string, change: (current: T) => T | undefined, caughtUp?: (current: T) => boolean): Promise<T>;
  /** Stores `value` under `key` whatever was there. */
  put(key: string, value: T): Promise<void>;
  /** Removes `key` and its history; a missing key is not an error. */
  delete(key: string): Promise<void>;
  /** Every key, or those that start with `prefix` (whole '.'-separated tokens ending in '.', as `run-1.`). */
  keys(prefix?: string): Promise<string[]>;
}

/** Whether `subject` matches the NATS subject `filter`. */
export function subjectMatches(filter: string, subject: string): boolean {
  const f = filter.split('.');
  const s = subject.split('.');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '>') return s.length > i;
    if (i >= s.length || (f[i] !== '*' && f[i] !== s[i])) return false;
  }
  return f.length === s.length;
}
