/**
 * `duel bench nats-cluster`: what a three-server NATS cluster with three copies of everything (R3)
 * costs against one server (R1), and how long a write waits when a leader dies.
 *  - One operation, each kind the services do per stage: a stream publish with its ack (a run
 *    event) and a KV compare-and-set (a run record, a session commit): p50 and p95 on R1 and R3.
 *  - Failover: a loop of KV compare-and-sets on R3 while the bucket's leader is SIGKILLed; the
 *    pause is the longest wait between two writes (the client moving to another server and the
 *    stream electing a leader). Several trials, the killed server started again between them.
 *  - A round: the demo's run (its models built once, the oracle judge) on R1 and on R3, the
 *    round's wall time.
 */
import { join } from 'node:path';
import type { Runtime } from '../src/engine/index.js';
import {
  CasStore,
  connectNats,
  ensureStream,
  type NatsConnection,
  replicasOf,
} from '../src/platform/nats.js';
import { NatsServer } from '../src/platform/nats-server.js';
import { runDemo } from '../src/testbed/demo.js';
import { quantile } from './measure.js';

export interface NatsClusterBenchResult {
  ops: number;
  op_ms: Record<'publish' | 'cas', Record<'r1' | 'r3', { p50: number; p95: number }>>;
  failover_pause_ms: number[];
  rounds: number;
  round_seconds: { r1: number; r3: number };
}

const encode = (v: { n: number }) => new TextEncoder().encode(JSON.stringify(v));
const decode = (b: Uint8Array) => JSON.parse(new TextDecoder().decode(b)) as { n: number };

async function opLatencies(nc: NatsConnection, ops: number) {
  const jsm = await nc.jetstreamManager();
  const stream = `BENCH_${Date.now()}`;
  await ensureStream(jsm, {
    name: stream,
    subjects: [`${stream.toLowerCase()}.>`],
    num_replicas: replicasOf(nc),
  });
  const js = nc.jetstream();
  const publish: number[] = [];
  for (let i = 0; i < ops; i++) {
    const t0 = performance.now();
    await js.publish(`${stream.toLowerCase()}.e`, encode({ n: i }));
    publish.push(performance.now() - t0);
  }
  const store = await CasStore.open(nc, `bench_${Date.now()}`, encode, decode);
  await store.create('r', { n: 0 });
  const cas: number[] = [];
  for (let i = 0; i < ops; i++) {
    const t0 = performance.now();
    await store.update('r', (v) => ({ n: v.n + 1 }));
    cas.push(performance.now() - t0);
  }
  const q = (xs: number[]) => ({ p50: quantile(xs, 0.5), p95: quantile(xs, 0.95) });
  return { publish: q(publish), cas: q(cas) };
}

export async function runNatsClusterBench(o: {
  ops: number;
  trials: number;
  rounds: number;
  out: string;
  runtime: Runtime;
  log: (line: string) => void;
}): Promise<NatsClusterBenchResult> {
  const single = await NatsServer.start();
  const cluster = await NatsServer.cluster(3);
  try {
    const r1 = await connectNats({ url: single.url, replicas: 1 }, 'bench-r1');
    const r3 = await connectNats({ url: cluster.url, replicas: 3 }, 'bench-r3');
    const one = await opLatencies(r1, o.ops);
    const three = await opLatencies(r3, o.ops);
    o.log(
      `publish p50 ${one.publish.p50.toFixed(2)} ms (R1) / ${three.publish.p50.toFixed(2)} ms (R3); compare-and-set p50 ${one.cas.p50.toFixed(2)} / ${three.cas.p50.toFixed(2)} ms`,
    );
    await r1.close();

    const pauses: number[] = [];
    const jsm = await r3.jetstreamManager();
    for (let t = 0; t < o.trials; t++) {
      const bucket = `failover_${t}`;
      const store = await CasStore.open(r3, bucket, encode, decode);
      await store.create('r', { n: 0 });
      const leader = cluster.byName((await jsm.streams.info(`KV_${bucket}`)).cluster!.leader!);
      let longest = 0;
      let last = performance.now();
      let stop = false;
      const writer = (async () => {
        while (!stop) {
          await store.update('r', (v) => ({ n: v.n + 1 }));
          const now = performance.now();
          longest = Math.max(longest, now - last);
          last = now;
        }
      })();
      await new Promise((r) => setTimeout(r, 300));
      await leader.crash();
      await new Promise((r) => setTimeout(r, 8000));
      stop = true;
      await writer;
      pauses.push(longest);
      o.log(`failover ${t + 1}/${o.trials}: the longest wait between two writes ${longest.toFixed(0)} ms`);
      await leader.revive();
      await cluster.ready();
    }
    await r3.close();

    const round = async (nats: { url: string; replicas: number }, name: string) => {
      const s = await runDemo({
        algo: 'inpo',
        rounds: o.rounds,
        seed: 1,
        sets: {},
        out: join(o.out, name),
        modelsDir: join(o.out, 'models'),
        judge: 'oracle',
        bus: 'nats',
        nats,
        runtime: o.runtime,
        log: () => {},
      });
      o.log(`${name}: ${(s.run_seconds / o.rounds).toFixed(2)} s a round`);
      return s.run_seconds / o.rounds;
    };
    const roundR1 = await round({ url: single.url, replicas: 1 }, 'r1');
    const roundR3 = await round({ url: cluster.url, replicas: 3 }, 'r3');
    return {
      ops: o.ops,
      op_ms: {
        publish: { r1: one.publish, r3: three.publish },
        cas: { r1: one.cas, r3: three.cas },
      },
      failover_pause_ms: pauses,
      rounds: o.rounds,
      round_seconds: { r1: roundR1, r3: roundR3 },
    };
  } finally {
    await cluster.stop();
    await single.stop();
  }
}
