/**
 * float32 ↔ IEEE half-precision bits, as float16 tensors are stored: the patterns numpy gives; and
 * the numbers a float16 graph is given as constants.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { compile, fromFloat16, Graph, Runtime, T, toFloat16 } from '../../src/engine/index.js';

describe('float16 bits', () => {
  it('gives the half-precision patterns of numpy.float16', () => {
    // numpy.array([...], dtype=numpy.float16).view(numpy.uint16)
    const cases: [number, number][] = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [0.1, 0x2e66],
      [1 / 3, 0x3555],
      [65504, 0x7bff],
      [65520, 0x7c00], // rounds up past the largest half: infinity
      [2 ** -24, 0x0001], // the smallest subnormal
      [2 ** -25, 0x0000], // a tie below it rounds to even: zero
      [3 * 2 ** -25, 0x0002], // a tie above an odd subnormal rounds up
      [6.1e-5, 0x03ff], // the largest subnormal region
      [1 + 2 ** -11, 0x3c00], // a tie rounds to the even mantissa
      [1 + 3 * 2 ** -11, 0x3c02],
      [Number.POSITIVE_INFINITY, 0x7c00],
    ];
    expect(Array.from(toFloat16(cases.map((c) => c[0])))).toEqual(cases.map((c) => c[1]));
    expect(Number.isNaN(fromFloat16(toFloat16([Number.NaN]))[0])).toBe(true);
  });

  it('round-trips every finite half exactly', () => {
    const all = Uint16Array.from({ length: 0x10000 }, (_, i) => i).filter((h) => (h & 0x7c00) !== 0x7c00);
    expect(Array.from(toFloat16(fromFloat16(all)))).toEqual(Array.from(all));
  });
});

describe('numbers in a float16 graph', () => {
  const runtime = new Runtime({ workers: 1, intraOpThreads: 1 });
  afterAll(() => runtime.close());

  it('keeps its scalar constants (each was truncated into the Uint16 storage before: 0.25 became 0)', async () => {
    const xs = [0.5, -3, 1e-3, 200];
    const g = new Graph();
    const x = g.input('x', 'float16', [xs.length]);
    const outputs = {
      scaled: T.mul(x, 0.25),
      shifted: T.add(x, -1.5),
      masked: T.where(T.greater(x, 0), x, -65504),
    };
    const session = await runtime.load(compile(g, outputs, 'scalars'));
    const out = await session.run({ x: { dtype: 'float16', dims: [xs.length], data: toFloat16(xs) } }, [
      'scaled',
      'shifted',
      'masked',
    ]);
    await session.release();
    const read = (name: string) => Array.from(fromFloat16(out[name]!.data as Uint16Array));
    const half = (v: number) => fromFloat16(toFloat16([v]))[0]!;
    expect(read('scaled')).toEqual(xs.map((v) => half(half(v) * 0.25)));
    expect(read('shifted')).toEqual(xs.map((v) => half(half(v) - 1.5)));
    expect(read('masked')).toEqual(xs.map((v) => (v > 0 ? half(v) : -65504)));
  });
});
