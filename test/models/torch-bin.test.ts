/**
 * pytorch_model.bin: the restricted reader gives the tensors of a torch.save'd state dict as its
 * safetensors twin holds them (every storage kind, offsets into a shared storage, a strided view),
 * a model directory loads the same from either file, and a pickle that asks for anything but
 * tensor rebuilding is refused naming the file. Fixtures: test/fixtures/torch/make.py.
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseSafetensors } from '../../src/engine/safetensors.js';
import { loadModelDir } from '../../src/models/model-dir.js';
import { readTorchStateDict } from '../../src/models/torch-bin.js';
import { refusal } from '../helpers/refusal.js';
import { fileTempDir } from '../helpers/tmp.js';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'torch');

describe('pytorch_model.bin (torch.save zip + pickle)', () => {
  it('reads every tensor as its safetensors twin holds it', () => {
    const bin = readTorchStateDict(join(FIXTURES, 'assorted.bin'));
    const twin = parseSafetensors(readFileSync(join(FIXTURES, 'assorted.safetensors'))).tensors;
    expect([...bin.keys()]).toEqual(['a.weight', 'b.half', 'c.bf16', 'd.ids', 'e.view', 'f.transposed']);
    for (const [name, want] of twin) {
      const got = bin.get(name)!;
      expect(got.shape, name).toEqual(want.shape);
      expect(got.dtype, name).toBe(want.dtype);
      expect(Array.from(got.data as ArrayLike<number | bigint>), name).toEqual(
        Array.from(want.data as ArrayLike<number | bigint>),
      );
    }
    // Both views read one storage: e.view[0] is storage[4], which the transposed view (element
    // [r][c] = storage[r + 3c]) holds at [1][1], row-major index 5.
    const transposed = bin.get('f.transposed')!.data as Float32Array;
    expect((bin.get('e.view')!.data as Float32Array)[0]).toBe(transposed[5]);
  });

  it('a model directory loads the same weights from pytorch_model.bin as from model.safetensors', () => {
    const a = loadModelDir(join(FIXTURES, 'llama-bin'));
    const b = loadModelDir(join(FIXTURES, 'llama-safetensors'));
    expect(Object.keys(a.weights).sort()).toEqual(Object.keys(b.weights).sort());
    for (const [k, t] of Object.entries(b.weights))
      expect(Array.from(a.weights[k]!.data), k).toEqual(Array.from(t.data));
  });

  it('refuses a pickle that calls anything but tensor rebuilding, naming the file and the global', () => {
    const path = join(FIXTURES, 'evil.bin');
    const { violations } = refusal(() => readTorchStateDict(path));
    expect(violations[0]!.field).toBe(path);
    expect(violations[0]!.description).toMatch(/refuses global posix\.system/);
  });

  it('refuses a file that is not a torch.save archive, and a model directory says which file', () => {
    const dir = fileTempDir('duel-torchbin-');
    mkdirSync(join(dir, 'm'));
    copyFileSync(join(FIXTURES, 'llama-bin', 'config.json'), join(dir, 'm', 'config.json'));
    writeFileSync(join(dir, 'm', 'pytorch_model.bin'), 'not a zip');
    const { violations } = refusal(() => loadModelDir(join(dir, 'm')));
    expect(violations[0]!.field).toBe(join(dir, 'm', 'pytorch_model.bin'));
    expect(violations[0]!.description).toMatch(/not a torch.save zip archive/);
  });
});
