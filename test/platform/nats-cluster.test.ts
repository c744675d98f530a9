/**
 * NATS as a cluster: three nats-servers routed on loopback, the services' connection given all
 * three (`nats.url`, comma-separated) and `nats.replicas` 3. Every stream and KV bucket duel creates
 * gets three copies, one created with fewer is raised, a count the cluster cannot hold is refused
 * naming the stream, and a record store goes on through the SIGKILL of its stream's leader, which
 * rejoins when started again.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DuelError } from '../../src/errors.js';
import { loadConfig } from '../../src/platform/config.js';
import { CasStore, connectNats, ensureStream } from '../../src/platform/nats.js';
import { type NatsCluster, NatsServer } from '../../src/platform/nats-server.js';
import { serviceConfigSchema } from '../../src/platform/service-config.js';
import { refused } from '../helpers/refusal.js';

let cluster: NatsCluster;
beforeAll(async () => {
  cluster = await NatsServer.cluster(3);
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

const encode = (v: { n: number }) => new TextEncoder().encode(JSON.stringify(v));
const decode = (b: Uint8Array) => JSON.parse(new TextDecoder().decode(b)) as { n: number };

describe('NATS as a three-server cluster', () => {
  it('takes every server in nats.url, and refuses a list with a bad entry naming the key', () => {
    const env = (url: string) => ({ env: { DUEL_NATS_URL: url, DUEL_NATS_REPLICAS: '3' } });
    const c = loadConfig(serviceConfigSchema, env(cluster.url));
    expect(c.nats).toMatchObject({ url: cluster.url, replicas: 3 });
    expect(() => loadConfig(serviceConfigSchema, env('nats://a:4222,http://b:4222'))).toThrow(
      /nats\.url.*comma-separated/,
    );
  });

  it('creates streams and KV buckets with nats.replicas copies, and raises one created with fewer', async () => {
    const one = await connectNats({ url: cluster.url, replicas: 1 }, 'test-r1');
    const three = await connectNats({ url: cluster.url, replicas: 3 }, 'test-r3');
    try {
      const jsm = await three.jetstreamManager();
      await CasStore.open(one, 'raised', encode, decode);
      expect((await jsm.streams.info('KV_raised')).config.num_replicas).toBe(1);
      await CasStore.open(three, 'raised', encode, decode);
      expect((await jsm.streams.info('KV_raised')).config.num_replicas).toBe(3);
      await ensureStream(jsm, { name: 'R3', subjects: ['r3.>'], num_replicas: 3 });
      expect((await jsm.streams.info('R3')).config.num_replicas).toBe(3);
      const err = await refused(ensureStream(jsm, { name: 'R3', subjects: ['r3.>'], num_replicas: 5 }));
      expect(err.message).toMatch(/NATS refused stream 'R3' with nats.replicas 5/);
    } finally {
      await one.close();
      await three.close();
    }
  }, 60_000);

  it('a record store goes on through the SIGKILL of its leader, which rejoins', async () => {
    const nc = await connectNats({ url: cluster.url, replicas: 3 }, 'test-failover');
    try {
      const store = await CasStore.open(nc, 'failover', encode, decode);
      await store.create('r', { n: 1 });
      const jsm = await nc.jetstreamManager();
      const leader = (await jsm.streams.info('KV_failover')).cluster!.leader!;
      const server = cluster.byName(leader);
      await server.crash();
      // The client moves to another server; the stream elects a leader among the two left.
      const t0 = performance.now();
      const after = await store.update('r', (v) => ({ n: v.n + 1 }));
      const pauseMs = performance.now() - t0;
      expect(after).toEqual({ n: 2 });
      expect(pauseMs).toBeLessThan(30_000);
      const next = (await jsm.streams.info('KV_failover')).cluster!.leader!;
      expect(next).not.toBe(leader);
      await server.revive();
      await cluster.ready();
      for (const until = Date.now() + 20_000; ; await new Promise((r) => setTimeout(r, 200))) {
        const replicas = (await jsm.streams.info('KV_failover')).cluster!.replicas ?? [];
        if (replicas.some((r) => r.name === leader && r.current)) break;
        if (Date.now() > until) throw DuelError.unavailable(`${leader} did not rejoin`);
      }
      expect((await store.get('r'))?.value).toEqual({ n: 2 });
    } finally {
      await nc.close();
    }
  }, 90_000);
});
