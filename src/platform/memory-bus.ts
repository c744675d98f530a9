/**
 * The in-process bus: the EventLog and RecordStore contracts (src/platform/bus.ts) in one
 * process's memory, with the same rules as JetStream's (at most once by subject and message id,
 * ordered replay-and-follow, compare-and-set by revision). What it cannot give is durability:
 * a restarted process starts empty, so a run it held is gone, and nothing outside the process
 * sees its events except through the orchestrator's WatchRun.
 */

import { DuelError } from '../errors.js';
import { type EventLog, type RecordStore, subjectMatches } from './bus.js';

export class MemoryEventLog implements EventLog {
  private readonly messages: { subject: string; data: Uint8Array }[] = [];
  private readonly subjects = new Set<string>();
  private readonly ids = new Set<string>();
  private readonly waiters = new Set<() => void>();

  async publishOnce(subject: string, data: Uint8Array, msgId: string): Promise<boolean> {
    if (this.subjects.has(subject)) return false;
    return this.publish(subject, data, msgId);
  }

  async publish(subject: string, data: Uint8Array, msgId: string): Promise<boolean> {
    if (this.ids.has(msgId)) return false;
    this.subjects.add(subject);
    this.ids.add(msgId);
    this.messages.push({ subject, data: data.slice() });
    for (const wake of this.waiters) wake();
    return true;
  }

  async *follow(filter: string, fromStart: boolean, signal: AbortSignal): AsyncIterable<Uint8Array> {
    let next = fromStart ? 0 : this.messages.length;
    while (!signal.aborted) {
      while (next < this.messages.length) {
        const m = this.messages[next++]!;
        if (subjectMatches(filter, m.subject)) yield m.data;
        if (signal.aborted) return;
      }
      await new Promise<void>((resolve) => {
        const wake = () => {
          this.waiters.delete(wake);
          signal.removeEventListener('abort', wake);
          resolve();
        };
        this.waiters.add(wake);
        signal.addEventListener('abort', wake, { once: true });
      });
    }
  }
}

/** Values are kept encoded, so a caller mutating what it read or wrote cannot change the store. */
export class MemoryRecordStore<T> implements RecordStore<T> {
  private readonly records = new Map<string, { bytes: Uint8Array; revision: number }>();
  private revision = 0;

  constructor(
    private readonly encode: (v: T) => Uint8Array,
    private readonly decode: (b: Uint8Array) => T,
  ) {}

  async get(key: string): Promise<{ value: T; revision: number } | undefined> {
    const r = this.records.get(key);
    return r && { value: this.decode(r.bytes), revision: r.revision };
  }

  async create(key: string, value: T): Promise<boolean> {
    if (this.records.has(key)) return false;
    this.records.set(key, { bytes: this.encode(value), revision: ++this.revision });
    return true;
  }

  async update(key: string, change: (current: T) => T | undefined): Promise<T> {
    // Single-threaded and without an await between read and write, so no other writer can come
    // in between: the compare-and-set always succeeds on the first try. (A memory store is always
    // caught up: `caughtUp` has nothing to wait for.)
    const cur = this.records.get(key);
    if (!cur) throw DuelError.notFound(`no record '${key}'`);
    const value = this.decode(cur.bytes);
    const next = change(value);
    if (next === undefined) return value;
    this.records.set(key, { bytes: this.encode(next), revision: ++this.revision });
    return next;
  }

  async put(key: string, value: T): Promise<void> {
    this.records.set(key, { bytes: this.encode(value), revision: ++this.revision });
  }

  async delete(key: string): Promise<void> {
    this.records.delete(key);
  }

  async keys(prefix = ''): Promise<string[]> {
    return [...this.records.keys()].filter((k) => k.startsWith(prefix)).sort();
  }
}
