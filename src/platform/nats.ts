/**
 * NATS JetStream as the services use it: one connection helper, streams created or updated to the
 * settings the code needs, publish-at-most-once by subject, replay-and-follow subscriptions, and a
 * compare-and-set record store on a KV bucket. Everything here stays within nats-server 2.9
 * (Debian's): no multi-filter consumers, no KV TTL per key.
 */
import {
  type ConnectionOptions,
  consumerOpts,
  type JetStreamClient,
  type JetStreamManager,
  type JetStreamSubscription,
  type KV,
  type NatsConnection,
  nanos,
  connect as natsConnect,
  type StreamConfig,
} from 'nats';
import type { EventLog, RecordStore } from './bus.js';
import { DuelError } from './errors.js';

export type { JetStreamClient, JetStreamManager, KV, NatsConnection };

/** Connects, turning "nothing listens there" into UNAVAILABLE that names the URL. */
export async function connectNats(url: string, name: string, extra: ConnectionOptions = {}) {
  try {
    return await natsConnect({
      servers: url.replace(/^nats:\/\//, ''),
      name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
      ...extra,
    });
  } catch (e) {
    throw DuelError.unavailable(`cannot reach NATS at ${url}: ${(e as Error).message}`);
  }
}

/** Creates `cfg.name`, or updates it when it exists (so a newer build's settings take effect). */
export async function ensureStream(jsm: JetStreamManager, cfg: Partial<StreamConfig> & { name: string }) {
  try {
    await jsm.streams.info(cfg.name);
    return await jsm.streams.update(cfg.name, cfg);
  } catch (e) {
    if ((e as { code?: string }).code !== '404') throw e;
    return await jsm.streams.add(cfg);
  }
}

export const durationNanos = (ms: number) => nanos(ms);

/**
 * Publishes `data` on `subject` unless the stream already holds a message there, with `msgId` for
 * the stream's duplicate window. The subject check makes a re-publish after a restart a no-op
 * however long the restart took; the message id covers two publishers racing inside the window.
 * Returns whether this call stored the message.
 */
export async function publishOnce(
  js: JetStreamClient,
  jsm: JetStreamManager,
  stream: string,
  subject: string,
  data: Uint8Array,
  msgId: string,
): Promise<boolean> {
  try {
    await jsm.streams.getMessage(stream, { last_by_subj: subject });
    return false;
  } catch (e) {
    if ((e as { code?: string }).code !== '404') throw e;
  }
  const ack = await js.publish(subject, data, { msgID: msgId });
  return !ack.duplicate;
}

/**
 * Every message on `subject` (a filter with wildcards), from the stream's first (`fromStart`) or
 * from now on, in order. A push-based ordered consumer: nats.js's newer `consumers.get` ordered
 * consumer delivers nothing against nats-server 2.9, this older API does.
 */
export async function followSubject(
  js: JetStreamClient,
  subject: string,
  fromStart: boolean,
): Promise<JetStreamSubscription> {
  const opts = consumerOpts();
  opts.orderedConsumer();
  opts.filterSubject(subject);
  if (fromStart) opts.deliverAll();
  else opts.deliverNew();
  return js.subscribe(subject, opts);
}

/** The EventLog contract (src/platform/bus.ts) on one JetStream stream. */
export class JetStreamEventLog implements EventLog {
  constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly stream: string,
  ) {}

  publishOnce(subject: string, data: Uint8Array, msgId: string): Promise<boolean> {
    return publishOnce(this.js, this.jsm, this.stream, subject, data, msgId);
  }

  async *follow(filter: string, fromStart: boolean, signal: AbortSignal): AsyncIterable<Uint8Array> {
    const sub = await followSubject(this.js, filter, fromStart);
    const stop = () => sub.unsubscribe();
    signal.addEventListener('abort', stop, { once: true });
    try {
      for await (const m of sub) yield m.data;
    } finally {
      signal.removeEventListener('abort', stop);
      sub.unsubscribe();
    }
  }
}

/**
 * Records in a KV bucket, changed only by compare-and-set: `update` re-reads and re-applies its
 * change when another writer got there first, so two orchestrators never lose each other's writes.
 */
export class CasStore<T> implements RecordStore<T> {
  constructor(
    readonly kv: KV,
    private readonly encode: (v: T) => Uint8Array,
    private readonly decode: (b: Uint8Array) => T,
  ) {}

  static async open<T>(
    js: JetStreamClient,
    bucket: string,
    encode: (v: T) => Uint8Array,
    decode: (b: Uint8Array) => T,
  ): Promise<CasStore<T>> {
    return new CasStore(await js.views.kv(bucket, { history: 8 }), encode, decode);
  }

  async get(key: string): Promise<{ value: T; revision: number } | undefined> {
    const e = await this.kv.get(key);
    if (e?.operation !== 'PUT') return undefined;
    return { value: this.decode(e.value), revision: e.revision };
  }

  /** Stores `value` under a new key; resolves to false when the key exists. */
  async create(key: string, value: T): Promise<boolean> {
    try {
      await this.kv.create(key, this.encode(value));
      return true;
    } catch (e) {
      if (/wrong last sequence/.test((e as Error).message)) return false;
      throw e;
    }
  }

  /**
   * Applies `change` to the current value and writes it if nobody wrote in between, retrying
   * otherwise. `change` returning undefined leaves the record as it is.
   */
  async update(key: string, change: (current: T) => T | undefined): Promise<T> {
    for (;;) {
      const cur = await this.get(key);
      if (!cur) throw DuelError.notFound(`no record '${key}'`);
      const next = change(cur.value);
      if (next === undefined) return cur.value;
      try {
        await this.kv.update(key, this.encode(next), cur.revision);
        return next;
      } catch (e) {
        if (!/wrong last sequence/.test((e as Error).message)) throw e;
      }
    }
  }

  async keys(): Promise<string[]> {
    const out: string[] = [];
    for await (const k of await this.kv.keys()) out.push(k);
    return out.sort();
  }
}
