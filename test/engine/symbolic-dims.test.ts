/** Symbolic dims and their arithmetic: canonical spelling at trace time, right values at run time. */
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { addDims, compile, countFlops, divDims, Graph, grad, mulDims, T } from '../../src/engine/index.js';

describe('dim arithmetic', () => {
  it('spells equal expressions the same way', () => {
    expect(mulDims('T', 'B')).toBe('B*T');
    expect(mulDims(mulDims('B', 4), 'T')).toBe('4*B*T');
    expect(addDims(1, 'P')).toBe('P+1');
    expect(addDims('P', 'P')).toBe('2*P');
    expect(mulDims(addDims('P', 1), 2)).toBe('2*P+2');
    expect(mulDims(3, 5)).toBe(15);
  });

  it('divides monomials exactly and refuses the rest', () => {
    expect(divDims('4*B*T', 'T')).toBe('4*B');
    expect(divDims('B*T', 'B*T')).toBe(1);
    expect(divDims('B', 'T')).toBeUndefined();
    expect(divDims('3*B', 2)).toBeUndefined();
  });
});

async function run(g: Graph, outputs: Parameters<typeof compile>[1], feeds: Record<string, ort.Tensor>) {
  const session = await ort.InferenceSession.create(compile(g, outputs).bytes);
  return session.run(feeds);
}

describe('symbolic shapes at run time', () => {
  it('reshape with -1 over symbolic dims flattens and restores', async () => {
    const g = new Graph();
    const x = g.input('x', 'float32', ['B', 'T', 4]);
    const flat = T.reshape(x, [-1, 4]);
    expect(flat.shape).toEqual(['B*T', 4]);
    const back = T.reshape(T.mul(flat, 2), ['B', 'T', 4]);
    const out = await run(
      g,
      { back, n: T.dimValue(g, flat.shape[0]!) },
      {
        x: new ort.Tensor(
          'float32',
          Float32Array.from({ length: 24 }, (_, i) => i),
          [2, 3, 4],
        ),
      },
    );
    expect(out.back!.dims).toEqual([2, 3, 4]);
    expect(Number((out.n!.data as BigInt64Array)[0])).toBe(6);
    expect((out.back!.data as Float32Array)[23]).toBe(46);
  });

  it('concat along a symbolic axis gives a sum dim that arange can use', async () => {
    const g = new Graph();
    const past = g.input('past', 'float32', [1, 'P']);
    const now = g.input('now', 'float32', [1, 'T']);
    const both = T.concat([past, now], 1);
    expect(both.shape).toEqual([1, 'P+T']);
    const idx = T.arange(g, both.shape[1]!);
    const out = await run(
      g,
      { idx, mean: T.mean(both) },
      {
        past: new ort.Tensor('float32', Float32Array.from([1, 2, 3]), [1, 3]),
        now: new ort.Tensor('float32', Float32Array.from([6, 8]), [1, 2]),
      },
    );
    expect([...(out.idx!.data as BigInt64Array)].map(Number)).toEqual([0, 1, 2, 3, 4]);
    expect((out.mean!.data as Float32Array)[0]).toBe(4);
  });
});

describe('countFlops', () => {
  it('counts 2·m·k·n per matmul and one per element for the rest, with symbols bound', () => {
    const g = new Graph();
    const a = g.input('a', 'float32', ['B', 3, 4]);
    const b = g.input('b', 'float32', [4, 5]);
    const y = T.exp(T.matmul(a, b));
    const unused = T.matmul(b, T.transposeLast(b));
    expect(unused.shape).toEqual([4, 4]);
    expect(countFlops(g, { y }, { B: 2 })).toEqual({
      matmul: 2 * 2 * 3 * 4 * 5,
      other: 2 * 3 * 5,
      total: 270,
    });
    expect(() => countFlops(g, { y })).toThrow(/no value bound for symbolic dim 'B'/);
  });

  it('counts a linear layer (one Gemm) and its gradients (Gemms) as the matmuls they replace', () => {
    const g = new Graph();
    const x = g.input('x', 'float32', ['N', 4]);
    const w = g.input('w', 'float32', [5, 4]);
    const [viaGemm, viaMatmul] = [T.linear(x, w), T.matmul(x, T.transposeLast(w))].map((y) => {
      const [dx, dw] = grad(T.reduceSum(y), [x, w]);
      return countFlops(g, { y, dx: dx!, dw: dw! }, { N: 3 });
    });
    expect(viaGemm!.matmul).toBe(3 * 2 * 3 * 4 * 5);
    expect(viaGemm!.matmul).toBe(viaMatmul!.matmul);
  });
});
