/**
 * float32 ↔ IEEE half-precision bits, as float16 tensors are stored: the patterns numpy gives; and
 * the numbers a float16 graph is given as constants.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { compile, fromFloat16, Graph, grad, Runtime, T, toFloat16 } from '../../src/engine/index.js';

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

describe('gradients of lookups in a float16 graph', () => {
  const runtimes = {
    cpu: new Runtime({ workers: 1, intraOpThreads: 1 }),
    webgpu: new Runtime({ workers: 1, intraOpThreads: 1, provider: 'webgpu' }),
  };
  afterAll(() => Promise.all(Object.values(runtimes).map((r) => r.close())));

  // Neither provider's ScatterND or ScatterElements adds in half: the adjoints of the embedding
  // lookup and of the token pick add in float32. Every value here is a small dyadic, exact in half.
  it.each(Object.keys(runtimes))('sums repeated rows and picks on %s as float32 does', async (name) => {
    const g = new Graph();
    const table = g.input('table', 'float32', [4, 2]);
    const ids = g.input('ids', 'int64', [5]);
    const picks = g.input('picks', 'int64', [5]);
    const rows = T.gather(T.cast(table, 'float16'), ids);
    const loss = T.cast(T.reduceSum(T.mul(T.takeLast(rows, picks), 0.5)), 'float32');
    const [dTable] = grad(loss, [table]);
    const session = await runtimes[name as keyof typeof runtimes].load(compile(g, { d: dTable! }, 'lookups'));
    const out = await session.run(
      {
        table: { dtype: 'float32', dims: [4, 2], data: Float32Array.from({ length: 8 }, (_, i) => i / 8) },
        ids: { dtype: 'int64', dims: [5], data: BigInt64Array.from([1n, 3n, 1n, 1n, 0n]) },
        picks: { dtype: 'int64', dims: [5], data: BigInt64Array.from([0n, 1n, 1n, 0n, 1n]) },
      },
      ['d'],
    );
    await session.release();
    // Row 1 is read three times (column 0 twice, column 1 once), row 3 once, row 0 once.
    expect(Array.from(out.d!.data as Float32Array)).toEqual([0, 0.5, 1, 0.5, 0, 0, 0, 0.5]);
  });
});
