import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { freemem } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  type NamedTensor,
  parseSafetensors,
  readSafetensors,
  serializeSafetensors,
  writeSafetensors,
} from '../../src/engine/safetensors.js';
import { fileDigest } from '../../src/platform/artifacts.js';
import { tempDirs } from '../helpers/tmp.js';

const tensors = new Map<string, NamedTensor>([
  [
    'model.embed_tokens.weight',
    { dtype: 'float32', shape: [3, 2], data: Float32Array.from([1, 2, 3, 4, 5, 6.5]) },
  ],
  ['lm_head.bias', { dtype: 'float64', shape: [2], data: Float64Array.from([-1e-300, 7]) }],
  ['step', { dtype: 'int64', shape: [], data: BigInt64Array.from([42n]) }],
]);

/** A file written by hand the way the Python `safetensors` library lays it out. */
function handMade(header: object, data: Uint8Array): Uint8Array {
  const json = Buffer.from(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

const tmp = tempDirs('duel-st-');

describe('safetensors', () => {
  it('round-trips tensors and metadata through a file, leaving no temporary file behind', () => {
    const dir = tmp();
    const path = join(dir, 'model.safetensors');
    writeSafetensors(path, tensors, { format: 'pt' });
    const back = readSafetensors(path);
    expect(back.metadata).toEqual({ format: 'pt' });
    for (const [name, t] of tensors) expect(back.tensors.get(name)).toEqual(t);
    expect(readdirSync(dir)).toEqual(['model.safetensors']);
    // The data section starts 8-byte aligned, as the reference implementation pads it.
    expect(Number(readFileSync(path).readBigUInt64LE(0)) % 8).toBe(0);
  });

  it('reads the reference layout, including BF16 widened to float32', () => {
    const bf16 = new Uint16Array([0x3f80, 0xc020]); // 1.0, -2.5
    const f16 = new Uint16Array([0x3c00]); // 1.0 as raw half bits
    const data = new Uint8Array(6);
    data.set(new Uint8Array(bf16.buffer), 0);
    data.set(new Uint8Array(f16.buffer), 4);
    const file = handMade(
      {
        a: { dtype: 'BF16', shape: [2], data_offsets: [0, 4] },
        b: { dtype: 'F16', shape: [1, 1], data_offsets: [4, 6] },
      },
      data,
    );
    const { tensors: t } = parseSafetensors(file);
    expect([...(t.get('a')!.data as Float32Array)]).toEqual([1, -2.5]);
    expect(t.get('b')).toEqual({ dtype: 'float16', shape: [1, 1], data: Uint16Array.from([0x3c00]) });
  });

  it.each([
    [
      'a header length past the end',
      () => {
        const b = serializeSafetensors(tensors);
        new DataView(b.buffer).setBigUint64(0, 1n << 40n, true);
        return b;
      },
      /header length 1099511627776 runs past the end/,
    ],
    [
      'an unknown dtype',
      () => handMade({ w: { dtype: 'Q4', shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)),
      /tensor 'w': unknown dtype "Q4"/,
    ],
    [
      'data outside the file',
      () => handMade({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, new Uint8Array(8)),
      /tensor 'w': data \[0, 16\) is outside the 8-byte data section/,
    ],
    [
      'a size that does not match the shape',
      () => handMade({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)),
      /tensor 'w': 8 bytes for shape \[3\] of F32 \(needs 12\)/,
    ],
    [
      'overlapping tensors',
      () =>
        handMade(
          {
            a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
            b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] },
          },
          new Uint8Array(8),
        ),
      /tensors 'a' and 'b' overlap/,
    ],
    [
      'a header that is not JSON',
      () => handMade({}, new Uint8Array(0)).fill(0x7b, 8),
      /header is not valid UTF-8 JSON/,
    ],
    ['a truncated file', () => new Uint8Array(5), /shorter than the 8-byte header length/],
  ])('rejects %s with the tensor named, in memory and from a file', (_name, make, message) => {
    expect(() => parseSafetensors(make())).toThrow(message);
    const path = join(tmp(), 'bad.safetensors');
    writeFileSync(path, make());
    expect(() => readSafetensors(path)).toThrow(message);
  });

  it('keeps the previous file intact when a write fails', () => {
    const dir = tmp();
    const path = join(dir, 'model.safetensors');
    writeSafetensors(path, tensors);
    const before = readFileSync(path);
    const bad = new Map([['w', { dtype: 'float32' as const, shape: [5], data: new Float32Array(2) }]]);
    expect(() => writeSafetensors(path, bad)).toThrow(/tensor 'w': 2 values for shape \[5\]/);
    expect(readFileSync(path).equals(before)).toBe(true);
    writeFileSync(join(dir, 'x'), '');
    expect(readdirSync(dir).sort()).toEqual(['model.safetensors', 'x']);
  });

  // A checkpoint shard or an AdamW session snapshot of a 135M model is over 2 GiB: more than one
  // read or write call moves, and more than a Buffer holds. The source file is sparse (its big
  // tensor is zeros on no disk); the tensors are read once, 2.1 GB of memory.
  it.skipIf(freemem() < 6 * 2 ** 30)(
    'reads, writes and hashes a file over 2 GiB, byte for byte',
    () => {
      const dir = tmp();
      const big = 2 ** 29 + 2 ** 20; // float32 values: 2.15 GB
      const header = {
        big: { dtype: 'F32', shape: [big], data_offsets: [0, big * 4] },
        tail: { dtype: 'F32', shape: [4], data_offsets: [big * 4, big * 4 + 16] },
      };
      let json = JSON.stringify(header);
      json += ' '.repeat((8 - ((json.length + 8) % 8)) % 8);
      const source = join(dir, 'sparse.safetensors');
      const head = Buffer.alloc(8 + json.length);
      head.writeBigUInt64LE(BigInt(json.length));
      head.write(json, 8);
      const fd = openSync(source, 'w');
      writeSync(fd, head);
      writeSync(fd, Buffer.from(Float32Array.of(1.5, -2, 3, 4).buffer), 0, 16, 8 + json.length + big * 4);
      closeSync(fd);

      const { tensors: read } = readSafetensors(source);
      expect(read.get('big')!.data.length).toBe(big);
      expect([...read.get('tail')!.data]).toEqual([1.5, -2, 3, 4]);
      const copy = join(dir, 'copy.safetensors');
      writeSafetensors(copy, read);
      read.clear();
      const digest = fileDigest(source);
      expect(digest.bytes).toBe(8 + json.length + big * 4 + 16);
      expect(digest.sha256).toBe(execFileSync('sha256sum', [source], { encoding: 'utf8' }).split(' ')[0]);
      expect(fileDigest(copy)).toEqual(digest);
    },
    120_000,
  );
});
