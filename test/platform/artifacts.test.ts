/** The file:// artifact store: atomic puts, digests that pin every byte, names that stay inside the root. */
import { cpSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileArtifactStore, localArtifactDir } from '../../src/platform/artifacts.js';
import { tempDirs } from '../helpers/tmp.js';

const tmp = tempDirs('duel-art-');

function modelDir(): string {
  const d = tmp();
  writeFileSync(join(d, 'config.json'), '{"model_type":"llama"}');
  writeFileSync(join(d, 'model.safetensors'), Buffer.from([1, 2, 3, 4]));
  mkdirSync(join(d, 'onnx'));
  writeFileSync(join(d, 'onnx', 'model.onnx'), 'graph');
  return d;
}

describe('file artifact store', () => {
  it('puts a directory under a name and gets it back verified', () => {
    const store = new FileArtifactStore(join(tmp(), 'store'));
    const ref = store.put(modelDir(), 'runs/r1/round-1');
    expect(ref.uri).toMatch(/^file:\/\/.*\/store\/runs\/r1\/round-1$/);
    expect(ref.sha256).toMatch(/^[0-9a-f]{64}$/);
    const dir = store.get(ref);
    expect(readdirSync(dir).sort()).toEqual(['config.json', 'manifest.json', 'model.safetensors', 'onnx']);
    // the same bytes give the same digest
    expect(store.put(modelDir(), 'again').sha256).toBe(ref.sha256);
    expect(readdirSync(join(store.root)).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('refuses a wrong digest, a changed file, an extra file, and a second put under one name', () => {
    const store = new FileArtifactStore(join(tmp(), 'store'));
    const ref = store.put(modelDir(), 'm');
    expect(() => store.get({ ...ref, sha256: '0'.repeat(64) })).toThrow(/manifest digest .* does not match/);
    const dir = store.get(ref);
    writeFileSync(join(dir, 'onnx', 'model.onnx'), 'tampered');
    expect(() => store.get(ref)).toThrow(/onnx\/model.onnx has sha256 .*, the manifest says/);
    writeFileSync(join(dir, 'onnx', 'model.onnx'), 'graph');
    writeFileSync(join(dir, 'extra.bin'), 'x');
    expect(() => store.get(ref)).toThrow(/extra.bin not in the manifest/);
    expect(() => store.put(modelDir(), 'm')).toThrow(/already exists; artifacts are immutable/);
    // A moving put takes a directory built in the store's scratch space without copying it.
    const built = join(store.scratch(), 'built');
    cpSync(modelDir(), built, { recursive: true });
    const moved = store.put(built, 'moved', { move: true });
    expect(existsSync(built)).toBe(false);
    expect(moved.sha256).toBe(ref.sha256);
    expect(() => store.get(moved)).not.toThrow();
    // Removed, the name is free again; removing what is not there is no error.
    store.remove('m');
    expect(store.find('m')).toBeUndefined();
    store.put(modelDir(), 'm');
    store.remove('never');
  });

  it('keeps every name inside its root', () => {
    const store = new FileArtifactStore(join(tmp(), 'store'));
    for (const name of ['../escape', 'a/../../escape', '/etc', '', 'a/..'])
      expect(() => store.put(modelDir(), name)).toThrow(/is not a name inside the artifact store/);
    expect(() => store.get({ uri: 'file:///etc', sha256: '0'.repeat(64) })).toThrow(/is not a name inside/);
    expect(() => store.get({ uri: 'nats://bucket/x', sha256: '0'.repeat(64) })).toThrow(
      /reads file:\/\/ URIs/,
    );
    // URIs Node cannot map to a path are the caller's error (INVALID_ARGUMENT), not a crash.
    for (const uri of ['file://host/x', 'file://%zz']) {
      expect(() => store.get({ uri, sha256: '0'.repeat(64) })).toThrow(/artifact\.uri/);
      expect(() => localArtifactDir({ uri, sha256: '0'.repeat(64) })).toThrow(/artifact\.uri/);
    }
  });
});
