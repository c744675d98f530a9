/**
 * The bus contracts (src/platform/bus.ts), one suite run against both implementations: the
 * in-process bus and NATS JetStream on a real nats-server. The orchestrator relies on these rules
 * whichever bus carries its run.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Code, DuelError } from '../../src/errors.js';
import type { EventLog, RecordStore } from '../../src/platform/bus.js';
import { subjectMatches } from '../../src/platform/bus.js';
import { MemoryEventLog, MemoryRecordStore } from '../../src/platform/memory-bus.js';
import {
  bucketStream,
  CasStore,
  connectNats,
  ensureStream,
  JetStreamEventLog,
  type NatsConnection,
} from '../../src/platform/nats.js';
import { NatsServer } from '../../src/platform/nats-server.js';

let server: NatsServer;
let nc: NatsConnection;
let streams = 0;

beforeAll(async () => {
  server = await NatsServer.start();
  nc = await connectNats(server.url, 'bus-test');
}, 30_000);

afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const bytes = (s: string) => new TextEncoder().encode(s);
const encode = (v: { n: number }) => bytes(JSON.stringify(v));
const decode = (b: Uint8Array) => JSON.parse(text(b)) as { n: number };

/** Reads `count` messages from `follow`, then aborts it. */
async function take(log: EventLog, filter: string, fromStart: boolean, count: number, started?: () => void) {
  const ac = new AbortController();
  const out: string[] = [];
  const it = log.follow(filter, fromStart, ac.signal)[Symbol.asyncIterator]();
  started?.();
  while (out.length < count) {
    const r = await it.next();
    if (r.done) break;
    out.push(text(r.value));
  }
  ac.abort();
  await it.return?.();
  return out;
}

const impls: [string, () => Promise<{ log: EventLog; store: RecordStore<{ n: number }> }>][] = [
  ['in-process', async () => ({ log: new MemoryEventLog(), store: new MemoryRecordStore(encode, decode) })],
  [
    'JetStream',
    async () => {
      const name = `BUS_${++streams}`;
      const jsm = await nc.jetstreamManager();
      await ensureStream(jsm, { name, subjects: [`bus${streams}.>`] });
      const log = new JetStreamEventLog(nc.jetstream(), jsm, name);
      // Prefix subjects so each test has its own stream.
      const prefix = `bus${streams}`;
      const prefixed: EventLog = {
        publishOnce: (s, d, id) => log.publishOnce(`${prefix}.${s}`, d, id),
        publish: (s, d, id) => log.publish(`${prefix}.${s}`, d, id),
        follow: (f, from, sig) => log.follow(`${prefix}.${f}`, from, sig),
      };
      return { log: prefixed, store: await CasStore.open(nc, `bus_${streams}`, encode, decode) };
    },
  ],
];

describe('subject filters', () => {
  it('match NATS wildcards: * one token, > one or more', () => {
    expect(subjectMatches('duel.run.a.>', 'duel.run.a.round.1.started')).toBe(true);
    expect(subjectMatches('duel.run.a.>', 'duel.run.a')).toBe(false);
    expect(subjectMatches('duel.run.a.>', 'duel.run.ab.created')).toBe(false);
    expect(subjectMatches('duel.*.a.created', 'duel.run.a.created')).toBe(true);
    expect(subjectMatches('duel.*.a', 'duel.run.a.created')).toBe(false);
    expect(subjectMatches('duel.run.a.created', 'duel.run.a.created')).toBe(true);
  });
});

describe.each(impls)('the %s bus', (_name, open) => {
  it('publishes at most once per subject and per message id', async () => {
    const { log } = await open();
    expect(await log.publishOnce('r.x.created', bytes('1'), 'x/-/created')).toBe(true);
    expect(await log.publishOnce('r.x.created', bytes('again'), 'x/-/created-2')).toBe(false);
    expect(await log.publishOnce('r.x.other', bytes('dup id'), 'x/-/created')).toBe(false);
    expect(await log.publishOnce('r.x.round.1.started', bytes('2'), 'x/1/started')).toBe(true);
    expect(await take(log, 'r.x.>', true, 2)).toEqual(['1', '2']);
  });

  it('publishes again on one subject, but once per message id', async () => {
    const { log } = await open();
    expect(await log.publish('r.y.rejected', bytes('1'), 'y/-/rejected/1')).toBe(true);
    expect(await log.publish('r.y.rejected', bytes('1 again'), 'y/-/rejected/1')).toBe(false);
    expect(await log.publish('r.y.rejected', bytes('2'), 'y/-/rejected/2')).toBe(true);
    expect(await take(log, 'r.y.>', true, 2)).toEqual(['1', '2']);
  });

  it('replays a filter from the start in order, then follows new messages', async () => {
    const { log } = await open();
    await log.publishOnce('r.a.created', bytes('a0'), 'a0');
    await log.publishOnce('r.b.created', bytes('b0'), 'b0');
    await log.publishOnce('r.a.round.1.started', bytes('a1'), 'a1');
    const later = take(log, 'r.a.>', true, 3);
    await new Promise((r) => setTimeout(r, 100));
    await log.publishOnce('r.a.finished', bytes('a2'), 'a2');
    expect(await later).toEqual(['a0', 'a1', 'a2']);
  });

  it('delivers only new messages when not from the start, and ends when aborted', async () => {
    const { log } = await open();
    await log.publishOnce('r.c.created', bytes('old'), 'c0');
    const fresh = take(log, 'r.c.>', false, 1);
    await new Promise((r) => setTimeout(r, 200));
    await log.publishOnce('r.c.finished', bytes('new'), 'c1');
    expect(await fresh).toEqual(['new']);
    const ac = new AbortController();
    const pending = (async () => {
      const got: string[] = [];
      for await (const m of log.follow('r.none.>', true, ac.signal)) got.push(text(m));
      return got;
    })();
    setTimeout(() => ac.abort(), 100);
    expect(await pending).toEqual([]);
  });

  it('changes a record only by compare-and-set, and refuses a second create', async () => {
    const { store } = await open();
    expect(await store.create('run-1', { n: 1 })).toBe(true);
    expect(await store.create('run-1', { n: 99 })).toBe(false);
    const before = (await store.get('run-1'))!;
    expect(before.value).toEqual({ n: 1 });
    // Two writers racing: neither loses the other's increment.
    await Promise.all([
      store.update('run-1', (r) => ({ n: r.n + 1 })),
      store.update('run-1', (r) => ({ n: r.n + 10 })),
    ]);
    const after = (await store.get('run-1'))!;
    expect(after.value).toEqual({ n: 12 });
    expect(after.revision).toBeGreaterThan(before.revision);
    expect(await store.update('run-1', () => undefined)).toEqual({ n: 12 });
    await expect(store.update('missing', (r) => r)).rejects.toThrow(/no record 'missing'/);
    await store.create('run-0', { n: 0 });
    expect(await store.keys()).toEqual(['run-0', 'run-1']);
  });

  it('puts over what is there, deletes, and lists keys by prefix', async () => {
    const { store } = await open();
    await store.put('s-1.1', { n: 1 });
    await store.put('s-1.1', { n: 2 });
    await store.put('s-1.2', { n: 3 });
    await store.put('s-2.1', { n: 4 });
    expect((await store.get('s-1.1'))!.value).toEqual({ n: 2 });
    expect(await store.keys('s-1.')).toEqual(['s-1.1', 's-1.2']);
    await store.delete('s-1.1');
    await store.delete('s-1.9');
    expect(await store.get('s-1.1')).toBeUndefined();
    expect(await store.keys('s-1.')).toEqual(['s-1.2']);
    // A deleted key can be created again.
    expect(await store.create('s-1.1', { n: 5 })).toBe(true);
  });

  it('lists each key once while the keys are being written', async () => {
    const { store } = await open();
    const names = Array.from({ length: 20 }, (_, i) => `w-${String(i).padStart(2, '0')}`);
    for (const k of names) await store.put(k, { n: 0 });
    let writing = true;
    const writer = (async () => {
      for (let n = 1; writing; n++) for (const k of names) await store.put(k, { n });
    })();
    try {
      for (let i = 0; i < 20; i++) expect(await store.keys()).toEqual(expect.arrayContaining(names));
      for (let i = 0; i < 20; i++) {
        const keys = (await store.keys()).filter((k) => k.startsWith('w-'));
        expect(keys).toEqual(names);
      }
    } finally {
      writing = false;
      await writer;
    }
  });
});

describe('the in-process record store', () => {
  it('keeps its own copy: a caller mutating what it read or wrote changes nothing stored', async () => {
    const store = new MemoryRecordStore(encode, decode);
    const v = { n: 1 };
    await store.create('k', v);
    v.n = 5;
    (await store.get('k'))!.value.n = 7;
    expect((await store.get('k'))!.value).toEqual({ n: 1 });
  });
});

describe('JetStream records read from a server that lags', () => {
  // nats-server 2.9 lets a stream leader just elected answer reads before it has applied what its
  // predecessor committed. The lag is played here by the KV view answering the revision before
  // the last for its first reads; the store and its writes are a real server's.
  async function lagging(bucket: string, staleReads: number) {
    const real = await CasStore.open(nc, bucket, encode, decode);
    await real.create('r', { n: 1 });
    await real.update('r', () => ({ n: 2 }));
    let stale = staleReads;
    const kv = new Proxy(real.kv, {
      get(target, prop, receiver) {
        if (prop !== 'get') return Reflect.get(target, prop, receiver);
        return async (key: string) => {
          const e = await target.get(key);
          if (!e || stale-- <= 0) return e;
          return target.get(key, { revision: e.revision - 1 });
        };
      },
    });
    return new CasStore(kv, encode, decode);
  }

  it('reads again, instead of changing, a record older than a write the caller saw acknowledged', async () => {
    const store = await lagging('lagging_update', 2);
    const seen: number[] = [];
    const next = await store.update(
      'r',
      (v) => {
        seen.push(v.n);
        return { n: v.n + 1 };
      },
      (v) => v.n >= 2,
    );
    expect(next).toEqual({ n: 3 });
    expect(seen).toEqual([2]);
    expect((await store.get('r'))!.value).toEqual({ n: 3 });
  });

  it('asks the stream for another leader while its reads stay behind, and reads the new one', async () => {
    const real = await CasStore.open(nc, 'lagging_reelect', encode, decode);
    await real.create('r', { n: 1 });
    await real.update('r', () => ({ n: 2 }));
    // A leader that answers the older revision until another is elected.
    let [behind, reelections] = [true, 0];
    const kv = new Proxy(real.kv, {
      get(target, prop, receiver) {
        if (prop !== 'get') return Reflect.get(target, prop, receiver);
        return async (key: string) => {
          const e = await target.get(key);
          return e && behind ? target.get(key, { revision: e.revision - 1 }) : e;
        };
      },
    });
    const store = new CasStore(
      kv,
      encode,
      decode,
      {
        async stepDown() {
          reelections++;
          behind = false;
        },
        describe: async () => '',
      },
      { reelectAfterMs: 300, giveUpAfterMs: 60_000 },
    );
    const t0 = Date.now();
    expect((await store.get('r', (v) => v.n >= 2))!.value).toEqual({ n: 2 });
    expect(reelections).toBe(1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
  });

  it('gives up on a read that never catches up with UNAVAILABLE naming what the stream reports', async () => {
    const real = await CasStore.open(nc, 'lagging_forever', encode, decode);
    await real.create('r', { n: 1 });
    await real.update('r', () => ({ n: 2 }));
    const kv = new Proxy(real.kv, {
      get(target, prop, receiver) {
        if (prop !== 'get') return Reflect.get(target, prop, receiver);
        return async (key: string) => target.get(key, { revision: 1 });
      },
    });
    const stream = await bucketStream(nc, 'lagging_forever');
    let stepDowns = 0;
    const store = new CasStore(
      kv,
      encode,
      decode,
      { stepDown: async () => void stepDowns++, describe: () => stream.describe() },
      { reelectAfterMs: 200, giveUpAfterMs: 1000 },
    );
    const err = await store.get('r', (v) => v.n >= 2).catch((e: DuelError) => e);
    expect(err).toBeInstanceOf(DuelError);
    expect((err as DuelError).code).toBe(Code.UNAVAILABLE);
    expect((err as Error).message).toMatch(
      /record r still reads as revision 1, .* after \d s and [2-5] leader re-elections; stream KV_lagging_forever: no cluster, last sequence 2$/,
    );
    expect(stepDowns).toBeGreaterThanOrEqual(2);
  });

  it('gives a caught-up read, and without the check the stale one a new leader answered', async () => {
    expect((await (await lagging('lagging_get', 1)).get('r'))!.value).toEqual({ n: 1 });
    expect((await (await lagging('lagging_get_2', 3)).get('r', (v) => v.n >= 2))!.value).toEqual({ n: 2 });
  });
});

describe('JetStream through a nats-server outage', () => {
  it('holds a publish and a record update while the server is down and lands each once when it is back', async () => {
    const storeDir = mkdtempSync(join(tmpdir(), 'duel-outage-'));
    let s = await NatsServer.start({ storeDir });
    const conn = await connectNats(s.url, 'outage-test');
    try {
      const jsm = await conn.jetstreamManager();
      await ensureStream(jsm, { name: 'OUTAGE', subjects: ['outage.>'] });
      const log = new JetStreamEventLog(conn.jetstream(), jsm, 'OUTAGE');
      const store = await CasStore.open(conn, 'outage', encode, decode);
      await store.create('r', { n: 1 });
      const port = s.port;
      await s.stop();
      const published = log.publishOnce('outage.a', bytes('a'), 'a');
      const updated = store.update('r', (v) => ({ n: v.n + 1 }));
      await new Promise((r) => setTimeout(r, 1500));
      s = await NatsServer.start({ port, storeDir });
      expect(await published).toBe(true);
      expect(await updated).toEqual({ n: 2 });
      expect((await store.get('r'))!.value).toEqual({ n: 2 });
      const info = await jsm.streams.info('OUTAGE', { subjects_filter: 'outage.>' });
      expect(info.state.subjects).toEqual({ 'outage.a': 1 });
    } finally {
      await conn.close();
      await s.stop();
      rmSync(storeDir, { recursive: true, force: true });
    }
  }, 60_000);
});
