/**
 * The nats:// artifact store on a real nats-server: a put is visible only once its manifest is
 * committed, a get verifies every byte against the reference, names stay names, and the resolver
 * reads file:// and nats:// references alike.
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ArtifactResolver } from '../../src/platform/artifact-resolver.js';
import { FileArtifactStore } from '../../src/platform/artifacts.js';
import { connectNats, type NatsConnection } from '../../src/platform/nats.js';
import { NatsArtifactStore } from '../../src/platform/nats-artifacts.js';
import { NatsServer } from '../../src/platform/nats-server.js';
import { tempDirs } from '../helpers/tmp.js';

const tmp = tempDirs('duel-nats-art-');
let server: NatsServer;
let nc: NatsConnection;

beforeAll(async () => {
  server = await NatsServer.start();
  nc = await connectNats(server.url, 'test');
});
afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

function modelDir(big = 0): string {
  const d = tmp();
  writeFileSync(join(d, 'config.json'), '{"model_type":"llama"}');
  // Larger than one object chunk, so a file spans several JetStream messages.
  writeFileSync(
    join(d, 'model.safetensors'),
    Buffer.from(Array.from({ length: big || 1_300_000 }, (_, i) => i % 251)),
  );
  mkdirSync(join(d, 'onnx'));
  writeFileSync(join(d, 'onnx', 'model.onnx'), 'graph');
  return d;
}

describe('nats artifact store', () => {
  it('puts a directory and gets it back, byte for byte, into a fresh cache', async () => {
    const src = modelDir();
    const writer = await NatsArtifactStore.open(nc, 'arts', join(tmp(), 'cache-a'));
    const ref = await writer.put(src, 'runs/r1/round-1');
    expect(ref.uri).toBe('nats://arts/runs/r1/round-1');
    // The same bytes as the file store would give: one digest definition for both schemes.
    expect(ref.sha256).toBe(new FileArtifactStore(join(tmp(), 'fs')).put(src, 'x').sha256);
    expect(readdirSync(src)).not.toContain('manifest.json');

    const reader = await NatsArtifactStore.open(nc, 'arts', join(tmp(), 'cache-b'));
    const dir = await reader.get(ref);
    expect(readdirSync(dir).sort()).toEqual(['config.json', 'manifest.json', 'model.safetensors', 'onnx']);
    expect(
      readFileSync(join(dir, 'model.safetensors')).equals(readFileSync(join(src, 'model.safetensors'))),
    ).toBe(true);
    expect(await reader.get(ref)).toBe(dir);
    expect((await reader.find('runs/r1/round-1'))?.ref).toEqual(ref);
    expect(await reader.find('runs/r1/round-2')).toBeUndefined();
  });

  it('refuses a wrong digest, a second put under one name, a missing artifact, and names that are not names', async () => {
    const store = await NatsArtifactStore.open(nc, 'arts2', join(tmp(), 'cache'));
    const ref = await store.put(modelDir(10), 'm');
    await expect(store.get({ ...ref, sha256: 'f'.repeat(64) })).rejects.toThrow(
      /nats:\/\/arts2\/m: manifest digest .* does not match the reference's f{64}/,
    );
    await expect(store.put(modelDir(10), 'm')).rejects.toThrow(/'m' already exists; artifacts are immutable/);
    await expect(store.get({ uri: 'nats://arts2/none', sha256: ref.sha256 })).rejects.toThrow(
      /does not exist/,
    );
    for (const name of ['../x', 'a/../b', '/abs', '', 'a//b'])
      await expect(store.put(modelDir(10), name)).rejects.toThrow(/is not a name inside the artifact store/);
    await expect(store.get({ uri: 'nats://other/m', sha256: ref.sha256 })).rejects.toThrow(
      /not in bucket arts2/,
    );
  });

  it('removes an artifact: its name is free again and its neighbours stay', async () => {
    const store = await NatsArtifactStore.open(nc, 'arts3', join(tmp(), 'cache'));
    await store.put(modelDir(10), 'sessions/a/snapshot-1');
    const kept = await store.put(modelDir(10), 'sessions/a/snapshot-10');
    await store.remove('sessions/a/snapshot-1');
    expect(await store.find('sessions/a/snapshot-1')).toBeUndefined();
    expect((await store.find('sessions/a/snapshot-10'))?.ref).toEqual(kept);
    await store.put(modelDir(10), 'sessions/a/snapshot-1');
  });

  it('names the file whose stored bytes no longer match the manifest', async () => {
    const store = await NatsArtifactStore.open(nc, 'arts3', join(tmp(), 'cache-a'));
    const ref = await store.put(modelDir(10), 'm');
    // Someone overwrites one object behind the store's back.
    const os = await nc.jetstream().views.os('arts3');
    await os.putBlob({ name: 'm/onnx/model.onnx' }, new TextEncoder().encode('tampered'));
    const reader = await NatsArtifactStore.open(nc, 'arts3', join(tmp(), 'cache-b'));
    await expect(reader.get(ref)).rejects.toThrow(
      /nats:\/\/arts3\/m: onnx\/model.onnx has sha256 .*, the manifest says/,
    );
    expect(readdirSync(reader.cacheRoot)).toEqual([]);
  });

  it('resolves file:// and nats:// references through one resolver, publishing where configured', async () => {
    const root = tmp();
    const resolver = new ArtifactResolver({ store: 'nats', root, bucket: 'pub' }, server.url);
    try {
      const ref = await (await resolver.publisher()).put(modelDir(10), 'ckpt');
      expect(ref.uri).toBe('nats://pub/ckpt');
      expect(readFileSync(join(await resolver.dir(ref), 'config.json'), 'utf8')).toContain('llama');
      const fileRef = new FileArtifactStore(join(root, 'files')).put(modelDir(10), 'policy');
      expect(await resolver.dir(fileRef)).toBe(join(root, 'files', 'policy'));
      await expect(resolver.dir({ uri: 's3://b/k', sha256: ref.sha256 })).rejects.toThrow(
        /only file:\/\/ and nats:\/\/ artifacts are supported/,
      );
    } finally {
      await resolver.close();
    }
  });
});
