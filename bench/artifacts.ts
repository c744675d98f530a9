/**
 * `duel bench artifacts`: checkpoint publish and load throughput of the two artifact stores.
 * A checkpoint-shaped directory (one large safetensors file, config, tokenizer, metrics) is
 * published with `put` and loaded with `get` into a reader that has never seen it (for nats://
 * a fresh download cache; for file:// the verification every load pays). The peer, measured in
 * the same run, is the floor either store must pay: copying the bytes once and hashing them once.
 */
import { createHash, randomFillSync } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileArtifactStore } from '../src/platform/artifacts.js';
import { connectNats } from '../src/platform/nats.js';
import { NatsArtifactStore } from '../src/platform/nats-artifacts.js';
import { NatsServer } from '../src/platform/nats-server.js';
import { median } from './measure.js';

export interface ArtifactBenchRow {
  store: string;
  mib: number;
  publish_ms: number;
  load_ms: number;
  publish_mib_s: number;
  load_mib_s: number;
}

function checkpoint(dir: string, mib: number): void {
  mkdirSync(dir, { recursive: true });
  // Random bytes: weights do not compress, and no layer below may shortcut repeated pages.
  const weights = Buffer.alloc(mib * 1024 * 1024);
  for (let o = 0; o < weights.length; o += 1 << 16)
    randomFillSync(weights, o, Math.min(1 << 16, weights.length - o));
  writeFileSync(join(dir, 'model.safetensors'), weights);
  writeFileSync(join(dir, 'config.json'), '{"model_type":"llama"}\n');
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({ model: { vocab: {} } }));
  writeFileSync(join(dir, 'metrics.json'), '{"steps":1}\n');
}

async function time(fn: () => unknown): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

export async function runArtifactBench(o: { sizesMib: number[]; repeats: number; log: (l: string) => void }) {
  const root = mkdtempSync(join(tmpdir(), 'duel-bench-art-'));
  const nats = await NatsServer.start({ storeDir: join(root, 'nats') });
  const nc = await connectNats(nats.url, 'bench');
  const rows: ArtifactBenchRow[] = [];
  try {
    let n = 0;
    for (const mib of o.sizesMib) {
      const src = join(root, `src-${mib}`);
      checkpoint(src, mib);
      const cases: [string, () => Promise<{ publish: number; load: number }>][] = [
        [
          'copy + sha256 (peer)',
          async () => {
            const dest = join(root, `peer-${n++}`);
            const publish = await time(() => cpSync(src, dest, { recursive: true }));
            const load = await time(() =>
              createHash('sha256')
                .update(readFileSync(join(dest, 'model.safetensors')))
                .digest(),
            );
            return { publish, load };
          },
        ],
        [
          'file://',
          async () => {
            const store = new FileArtifactStore(join(root, 'files'));
            let ref!: Awaited<ReturnType<FileArtifactStore['put']>>;
            const publish = await time(() => {
              ref = store.put(src, `ckpt-${n++}`);
            });
            const load = await time(() => new FileArtifactStore(join(root, 'files')).get(ref));
            return { publish, load };
          },
        ],
        [
          'nats://',
          async () => {
            const writer = await NatsArtifactStore.open(nc, 'bench', join(root, `cache-w-${n}`));
            const reader = await NatsArtifactStore.open(nc, 'bench', join(root, `cache-r-${n}`));
            let ref!: Awaited<ReturnType<NatsArtifactStore['put']>>;
            const publish = await time(async () => {
              ref = await writer.put(src, `ckpt-${n++}`);
            });
            const load = await time(() => reader.get(ref));
            return { publish, load };
          },
        ],
      ];
      for (const [store, run] of cases) {
        const publish: number[] = [];
        const load: number[] = [];
        for (let i = 0; i < o.repeats; i++) {
          const r = await run();
          publish.push(r.publish);
          load.push(r.load);
        }
        const row = {
          store,
          mib,
          publish_ms: median(publish),
          load_ms: median(load),
          publish_mib_s: mib / (median(publish) / 1000),
          load_mib_s: mib / (median(load) / 1000),
        };
        rows.push(row);
        o.log(
          `${mib} MiB ${store}: publish ${row.publish_ms.toFixed(0)} ms (${row.publish_mib_s.toFixed(0)} MiB/s), load ${row.load_ms.toFixed(0)} ms (${row.load_mib_s.toFixed(0)} MiB/s)`,
        );
      }
      rmSync(src, { recursive: true, force: true });
    }
    return { repeats: o.repeats, rows };
  } finally {
    await nc.close();
    await nats.stop();
    rmSync(root, { recursive: true, force: true });
  }
}
