/**
 * NATS JetStream as the services use it: one connection helper, streams created or updated to the
 * settings the code needs, publish-at-most-once by subject, replay-and-follow subscriptions, and a
 * compare-and-set record store on a KV bucket. Everything here stays within nats-server 2.9
 * (Debian's): no multi-filter consumers, no KV TTL per key.
 */
import { readFileSync } from 'node:fs';
import {
  type ConnectionOptions,
  consumerOpts,
  credsAuthenticator,
  type JetStreamClient,
  type JetStreamManager,
  type JetStreamSubscription,
  type KV,
  type MsgHdrs,
  type NatsConnection,
  nanos,
  connect as natsConnect,
  headers as natsHeaders,
  nkeyAuthenticator,
  type StreamConfig,
} from 'nats';
import { DuelError } from '../errors.js';
import type { EventLog, Headers, RecordStore } from './bus.js';

export type { JetStreamClient, JetStreamManager, KV, NatsConnection };

/** How a process reaches NATS (the `nats.*` settings, src/platform/service-config.ts). */
export interface NatsSettings {
  url: string;
  /** User and password (both, or neither). */
  user?: string;
  password?: string;
  token?: string;
  /** Path of an nkey seed file (`SU...`): the server knows the user by its public key. */
  nkeySeed?: string;
  /** Path of a `.creds` file (a user JWT and its nkey seed), for operator-mode servers. */
  creds?: string;
  /** TLS: a CA to trust, and a client certificate and key when the server verifies clients. */
  tls?: { ca?: string; cert?: string; key?: string };
  /** Replicas of every stream, KV bucket and object store duel creates (a JetStream cluster). */
  replicas?: number;
}

/** The URL(s) with any user:password@ replaced, for messages and logs. */
const redactUrl = (url: string) => url.replace(/\/\/[^@/,]*@/g, '//***@');

/**
 * How many replicas each stream, KV bucket and object store gets (`nats.replicas`), by the
 * connection the services made with those settings: the code that creates them only has the
 * connection.
 */
const REPLICAS = new WeakMap<NatsConnection, number>();

/** The replicas `nats.replicas` asks for, for assets created over `nc` (1 when not set). */
export const replicasOf = (nc: NatsConnection): number => REPLICAS.get(nc) ?? 1;

const readSecret = (path: string, field: string): Uint8Array => {
  try {
    return new Uint8Array(readFileSync(path));
  } catch (e) {
    throw DuelError.invalidArgument([{ field, description: `cannot read ${path}: ${(e as Error).message}` }]);
  }
};

/** nats.js connection options for `s`: credentials and TLS; secrets read from their files here. */
function natsConnectOptions(s: NatsSettings): ConnectionOptions {
  // Several servers, comma-separated, as NATS clients take them: the client connects to one and
  // fails over to the others (and to those the cluster announces).
  const urls = s.url.split(',').map((u) => u.trim());
  const o: ConnectionOptions = {
    servers: urls.map((u) => u.replace(/^(nats|tls):\/\/([^@/]*@)?/, '')),
  };
  // user:password@ in a URL, as NATS clients take it (the settings' own user wins).
  for (const u of urls) {
    const inUrl = /^(?:nats|tls):\/\/([^:@/]+):([^@/]*)@/.exec(u);
    if (inUrl) Object.assign(o, { user: decodeURIComponent(inUrl[1]!), pass: decodeURIComponent(inUrl[2]!) });
  }
  if (s.user) Object.assign(o, { user: s.user, pass: s.password ?? '' });
  if (s.token) o.token = s.token;
  if (s.nkeySeed) {
    const seed = new TextDecoder().decode(readSecret(s.nkeySeed, 'nats.nkeySeed')).trim();
    o.authenticator = nkeyAuthenticator(new TextEncoder().encode(seed));
  }
  if (s.creds) o.authenticator = credsAuthenticator(readSecret(s.creds, 'nats.creds'));
  const t = s.tls ?? {};
  if (urls.some((u) => u.startsWith('tls://')) || t.ca || t.cert)
    o.tls = {
      ...(t.ca ? { caFile: t.ca } : {}),
      ...(t.cert ? { certFile: t.cert, keyFile: t.key ?? '' } : {}),
    };
  return o;
}

/**
 * Connects with `settings` (a bare URL: no credentials), turning "nothing listens there" and a
 * refused login into UNAVAILABLE that names the URL without its password.
 */
export async function connectNats(
  settings: NatsSettings | string,
  name: string,
  extra: ConnectionOptions = {},
) {
  const s = typeof settings === 'string' ? { url: settings } : settings;
  try {
    const nc = await natsConnect({
      ...natsConnectOptions(s),
      name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
      ...extra,
    });
    REPLICAS.set(nc, s.replicas ?? 1);
    return nc;
  } catch (e) {
    if (e instanceof DuelError) throw e;
    throw DuelError.unavailable(`cannot reach NATS at ${redactUrl(s.url)}: ${(e as Error).message}`);
  }
}

/**
 * Creates `cfg.name`, or updates it when it exists (so a newer build's settings take effect, its
 * replicas raised to `cfg.num_replicas` included).
 */
export async function ensureStream(jsm: JetStreamManager, cfg: Partial<StreamConfig> & { name: string }) {
  try {
    await jsm.streams.info(cfg.name);
  } catch (e) {
    if ((e as { code?: string }).code !== '404') throw e;
    return await jsm.streams.add(cfg);
  }
  try {
    return await jsm.streams.update(cfg.name, cfg);
  } catch (e) {
    throw refusedReplicas(cfg.name, cfg.num_replicas, e);
  }
}

/**
 * Raises stream `name` (a KV bucket's `KV_<bucket>`, an object store's `OBJ_<bucket>`) to
 * `replicas` when it has fewer: created before `nats.replicas` was raised, it would otherwise keep
 * one copy on one server.
 */
export async function ensureReplicas(jsm: JetStreamManager, name: string, replicas: number): Promise<void> {
  const { config } = await jsm.streams.info(name);
  if (config.num_replicas >= replicas) return;
  try {
    await jsm.streams.update(name, { ...config, num_replicas: replicas });
  } catch (e) {
    throw refusedReplicas(name, replicas, e);
  }
}

/** A stream the server would not give `replicas` copies (too few servers, or an old server). */
function refusedReplicas(name: string, replicas: number | undefined, e: unknown): DuelError {
  return DuelError.failedPrecondition(
    `NATS refused stream '${name}' with nats.replicas ${replicas ?? 1}: ${(e as Error).message}`,
  );
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
  headers?: Headers,
): Promise<boolean> {
  try {
    await jsm.streams.getMessage(stream, { last_by_subj: subject });
    return false;
  } catch (e) {
    if ((e as { code?: string }).code !== '404') throw e;
  }
  const ack = await js.publish(subject, data, { msgID: msgId, ...natsHeadersOf(headers) });
  return !ack.duplicate;
}

function natsHeadersOf(h: Headers | undefined): { headers?: MsgHdrs } {
  return h ? { headers: toNatsHeaders(h) } : {};
}

/** A plain header record as nats.js's headers. */
export function toNatsHeaders(h: Headers): MsgHdrs {
  const out = natsHeaders();
  for (const [k, v] of Object.entries(h)) out.set(k, v);
  return out;
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

/**
 * nats.js error codes that mean "the server is restarting or not reachable yet": a request timed
 * out, JetStream has no responders (it is still recovering its store), the connection dropped.
 * nats.js reconnects by itself; a write that failed this way is retried until it lands.
 */
const TRANSIENT_NATS = new Set(['TIMEOUT', '503', '408', 'DISCONNECT', 'CONNECTION_REFUSED']);

/** How long a JetStream write keeps retrying through a NATS outage before it fails the caller. */
const NATS_OUTAGE_MS = 60_000;
/** How long a record may read older than an acknowledged write before its leader is asked to step down. */
const STALE_REELECT_MS = 8_000;

/**
 * Runs `op`, retrying with backoff while NATS is restarting (TRANSIENT_NATS) for up to `maxWaitMs`;
 * then fails with UNAVAILABLE naming what timed out. Every op passed here must be safe to repeat:
 * a write whose ack was lost may already have landed (publishOnce and compare-and-set are).
 */
async function throughOutage<T>(what: string, op: () => Promise<T>, maxWaitMs = NATS_OUTAGE_MS): Promise<T> {
  const start = Date.now();
  for (let backoff = 100; ; backoff = Math.min(backoff * 2, 2000)) {
    try {
      return await op();
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === undefined || !TRANSIENT_NATS.has(code)) throw e;
      if (Date.now() - start > maxWaitMs)
        throw DuelError.unavailable(
          `NATS unreachable for ${Math.round((Date.now() - start) / 1000)} s during ${what} (${code}: ${(e as Error).message})`,
        );
      await new Promise((r) => setTimeout(r, backoff));
    }
  }
}

/** What a record store asks of its bucket's stream when reads stay behind a write. */
export interface BucketStream {
  /** Asks the stream to elect another leader. */
  stepDown(): Promise<void>;
  /** The stream as its leader reports it: leader, last sequence, each replica's lag. */
  describe(): Promise<string>;
}

/** KV bucket `bucket`'s stream (`KV_<bucket>`), through the JetStream API on `nc`. */
export async function bucketStream(nc: NatsConnection, bucket: string): Promise<BucketStream> {
  const jsm = await nc.jetstreamManager();
  const name = `KV_${bucket}`;
  return {
    async stepDown() {
      await nc.request(`$JS.API.STREAM.LEADER.STEPDOWN.${name}`, undefined, { timeout: 5000 });
    },
    async describe() {
      const { cluster, state } = await jsm.streams.info(name);
      if (!cluster?.leader) return `${name}: no cluster, last sequence ${state.last_seq}`;
      const replicas = (cluster.replicas ?? []).map(
        (r) =>
          `${r.name} ${r.current ? 'current' : 'behind'}${r.offline ? ' offline' : ''} lag ${r.lag ?? 0}`,
      );
      return `${name}: leader ${cluster.leader}, last sequence ${state.last_seq}, replicas ${replicas.join(', ') || 'none'}`;
    },
  };
}

/** The EventLog contract (src/platform/bus.ts) on one JetStream stream. */
export class JetStreamEventLog implements EventLog {
  constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly stream: string,
  ) {}

  publishOnce(subject: string, data: Uint8Array, msgId: string, headers?: Headers): Promise<boolean> {
    return throughOutage(`the publish of ${subject}`, () =>
      publishOnce(this.js, this.jsm, this.stream, subject, data, msgId, headers),
    );
  }

  publish(subject: string, data: Uint8Array, msgId: string, headers?: Headers): Promise<boolean> {
    return throughOutage(`the publish of ${subject}`, async () => {
      const ack = await this.js.publish(subject, data, { msgID: msgId, ...natsHeadersOf(headers) });
      return !ack.duplicate;
    });
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
    /** The bucket's stream, for a read that stays behind (caughtUpRead); none: it only waits. */
    private readonly stream?: BucketStream,
    private readonly stale: { reelectAfterMs: number; giveUpAfterMs: number } = {
      reelectAfterMs: STALE_REELECT_MS,
      giveUpAfterMs: NATS_OUTAGE_MS,
    },
  ) {}

  /** The bucket on `nc`, created with (or raised to) its `nats.replicas`. */
  static async open<T>(
    nc: NatsConnection,
    bucket: string,
    encode: (v: T) => Uint8Array,
    decode: (b: Uint8Array) => T,
  ): Promise<CasStore<T>> {
    const replicas = replicasOf(nc);
    const opts = { history: 8, replicas, allow_direct: false };
    await nc.jetstream().views.kv(bucket, opts);
    const jsm = await nc.jetstreamManager();
    await ensureReplicas(jsm, `KV_${bucket}`, replicas);
    // Reads from the stream's leader only: a "direct get" may be answered by a replica that has
    // not caught up (right after a leader fails over), and a compare-and-set built on a stale read
    // would take this process's own last write for someone else's. A bucket made with direct gets
    // (nats.js's default) is changed, then opened again, since the view keeps how it was opened.
    const { config } = await jsm.streams.info(`KV_${bucket}`);
    if (config.allow_direct) await jsm.streams.update(config.name, { ...config, allow_direct: false });
    return new CasStore(
      await nc.jetstream().views.kv(bucket, opts),
      encode,
      decode,
      await bucketStream(nc, bucket),
    );
  }

  async get(
    key: string,
    caughtUp?: (current: T) => boolean,
  ): Promise<{ value: T; revision: number } | undefined> {
    if (caughtUp) return this.caughtUpRead(key, caughtUp);
    const e = await throughOutage(`the read of record ${key}`, () => this.kv.get(key));
    if (e?.operation !== 'PUT') return undefined;
    return { value: this.decode(e.value), revision: e.revision };
  }

  /** Stores `value` under a new key; resolves to false when the key exists. */
  async create(key: string, value: T): Promise<boolean> {
    try {
      await throughOutage(`the creation of record ${key}`, () => this.kv.create(key, this.encode(value)));
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
  async update(
    key: string,
    change: (current: T) => T | undefined,
    caughtUp: (current: T) => boolean = () => true,
  ): Promise<T> {
    for (;;) {
      const cur = await this.caughtUpRead(key, caughtUp);
      if (!cur) throw DuelError.notFound(`no record '${key}'`);
      const next = change(cur.value);
      if (next === undefined) return cur.value;
      try {
        // A lost ack retried here finds a newer revision and goes round the loop: change re-applies.
        await throughOutage(`the update of record ${key}`, () =>
          this.kv.update(key, this.encode(next), cur.revision),
        );
        return next;
      } catch (e) {
        if (!/wrong last sequence/.test((e as Error).message)) throw e;
      }
    }
  }

  /**
   * The record, read again (with backoff, for as long as a NATS outage is waited out) while it
   * lacks a write this process saw acknowledged: nats-server 2.9 lets a stream leader just elected
   * answer a read before it has applied the entries its predecessor committed. A leader that
   * stays behind for STALE_REELECT_MS is asked to step down, and again each STALE_REELECT_MS
   * after: a CI run saw one answer a stale revision for a whole minute after its predecessor was
   * killed. The write was acknowledged once a quorum stored it, so one of the two replicas left
   * holds it, and an election that picks the one holding it ends the wait. A read still behind
   * after NATS_OUTAGE_MS fails UNAVAILABLE with what the stream reports of its replicas.
   */
  private async caughtUpRead(
    key: string,
    caughtUp: (current: T) => boolean,
  ): Promise<{ value: T; revision: number } | undefined> {
    const start = Date.now();
    const { reelectAfterMs, giveUpAfterMs } = this.stale;
    let [reelectAt, reelections] = [start + reelectAfterMs, 0];
    for (let backoff = 50; ; backoff = Math.min(backoff * 2, 1000)) {
      const cur = await this.get(key);
      if (!cur || caughtUp(cur.value)) return cur;
      if (Date.now() - start > giveUpAfterMs) {
        // What the stream says of itself is what an operator (or a flaky test's log) needs next.
        const state = this.stream
          ? await this.stream.describe().catch((e: Error) => `unknown: ${e.message}`)
          : '';
        throw DuelError.unavailable(
          `record ${key} still reads as revision ${cur.revision}, older than a write acknowledged before, after ${Math.round((Date.now() - start) / 1000)} s and ${reelections} leader re-elections${state ? `; stream ${state}` : ''}`,
        );
      }
      if (this.stream && Date.now() >= reelectAt) {
        // A refused or timed-out stepdown (no other replica current yet) is tried again later.
        await this.stream.stepDown().then(
          () => reelections++,
          () => {},
        );
        reelectAt = Date.now() + reelectAfterMs;
      }
      await new Promise((r) => setTimeout(r, backoff));
    }
  }

  async put(key: string, value: T): Promise<void> {
    await throughOutage(`the write of record ${key}`, () => this.kv.put(key, this.encode(value)));
  }

  async delete(key: string): Promise<void> {
    await throughOutage(`the removal of record ${key}`, () => this.kv.purge(key));
  }

  /** A prefix is a filter on the server (`prefix>`), so the bucket's other keys are not listed. */
  async keys(prefix = ''): Promise<string[]> {
    if (prefix && !prefix.endsWith('.')) throw new Error(`record key prefix '${prefix}' must end in '.'`);
    // The listing follows the bucket until it is caught up, so a key written while it runs (a
    // session's snapshot adopted meanwhile) comes twice: each key once.
    const out = new Set<string>();
    for await (const k of await this.kv.keys(prefix ? `${prefix}>` : undefined)) out.add(k);
    return [...out].sort();
  }
}
