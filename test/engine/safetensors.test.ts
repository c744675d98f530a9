import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  type NamedTensor,
  parseSafetensors,
  readSafetensors,
  serializeSafetensors,
  writeSafetensors,
} from '../../src/engine/safetensors.js';
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
  ])('rejects %s with the tensor named', (_name, make, message) => {
    expect(() => parseSafetensors(make())).toThrow(message);
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
});
