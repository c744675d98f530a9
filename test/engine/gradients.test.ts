/** Every differentiable op's vector-Jacobian rule against central differences (float64). */
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { grad } from '../../src/engine/autodiff.js';
import { Graph, type Tensor } from '../../src/engine/graph.js';
import { compile } from '../../src/engine/onnx.js';
import * as T from '../../src/engine/ops/index.js';
import { erf } from '../helpers/erf.js';
import { gradcheck, type InputSpec, indices } from '../helpers/gradcheck.js';

type Case = [name: string, build: (g: Graph, x: Tensor[]) => Tensor, inputs: InputSpec[]];
const s = (...shape: number[]): InputSpec => ({ shape });
const pos = (...shape: number[]): InputSpec => ({ shape, positive: true });

// Awkward shapes on purpose: broadcasting both ways, size-1 and odd dims, rank changes.
const CASES: Case[] = [
  ['add (broadcast)', (_, [a, b]) => T.add(a!, b!), [s(2, 3), s(3)]],
  ['sub (broadcast both)', (_, [a, b]) => T.sub(a!, b!), [s(2, 1, 3), s(5, 1)]],
  ['mul (outer)', (_, [a, b]) => T.mul(a!, b!), [s(3, 1), s(1, 4)]],
  ['div', (_, [a, b]) => T.div(a!, b!), [s(2, 3), pos(3)]],
  ['pow', (_, [a, b]) => T.pow(a!, b!), [pos(2, 3), s(3)]],
  ['maximum', (_, [a, b]) => T.maximum(a!, b!), [s(3, 5), s(5)]],
  ['minimum', (_, [a, b]) => T.minimum(a!, b!), [s(3, 5), s(3, 1)]],
  ['neg', (_, [x]) => T.neg(x!), [s(7)]],
  ['exp', (_, [x]) => T.exp(x!), [s(2, 3)]],
  ['log', (_, [x]) => T.log(x!), [pos(2, 3)]],
  ['sqrt', (_, [x]) => T.sqrt(x!), [pos(5)]],
  ['rsqrt', (_, [x]) => T.rsqrt(x!), [pos(5)]],
  ['reciprocal', (_, [x]) => T.reciprocal(x!), [pos(3, 1)]],
  ['tanh', (_, [x]) => T.tanh(x!), [s(2, 5)]],
  ['sigmoid', (_, [x]) => T.sigmoid(x!), [s(2, 5)]],
  ['relu', (_, [x]) => T.relu(x!), [s(3, 5)]],
  ['sin', (_, [x]) => T.sin(x!), [s(2, 3)]],
  ['cos', (_, [x]) => T.cos(x!), [s(3, 2)]],
  ['abs', (_, [x]) => T.abs(x!), [s(3, 5)]],
  ['silu', (_, [x]) => T.silu(x!), [s(3, 5)]],
  ['gelu', (_, [x]) => T.gelu(x!), [s(3, 5)]],
  ['softplus', (_, [x]) => T.softplus(T.mul(x!, 10)), [s(3, 5)]],
  [
    'where (broadcast)',
    (g, [a, b]) => T.where(T.greater(g.constant(Float64Array.from([1, -1, 2]), 'float64', [3]), 0), a!, b!),
    [s(2, 3), s(1)],
  ],
  ['cast round trip', (_, [x]) => T.cast(T.cast(x!, 'float64'), 'float64'), [s(4)]],
  ['matmul', (_, [a, b]) => T.matmul(a!, b!), [s(3, 4), s(4, 5)]],
  ['matmul (batched)', (_, [a, b]) => T.matmul(a!, b!), [s(2, 3, 4), s(2, 4, 1)]],
  ['matmul (broadcast batch)', (_, [a, b]) => T.matmul(a!, b!), [s(2, 1, 3, 4), s(5, 4, 2)]],
  ['linear (Gemm, x·wᵀ + b)', (_, [x, w, b]) => T.linear(x!, w!, b!), [s(3, 4), s(5, 4), s(5)]],
  ['linear (rows of a 3-D x, no bias)', (_, [x, w]) => T.linear(x!, w!), [s(2, 3, 4), s(5, 4)]],
  ['reduceSum (axis, keepdims)', (_, [x]) => T.reduceSum(x!, 1, true), [s(2, 3, 4)]],
  ['reduceSum (all)', (_, [x]) => T.reduceSum(x!), [s(3, 1, 5)]],
  ['reduceMax', (_, [x]) => T.reduceMax(x!, [0, 2]), [s(3, 2, 5)]],
  ['mean', (_, [x]) => T.mean(x!, -1), [s(3, 5)]],
  ['logsumexp', (_, [x]) => T.logsumexp(x!, -1), [s(3, 7)]],
  ['softmax', (_, [x]) => T.softmax(x!, 1), [s(2, 5, 3)]],
  ['logSoftmax', (_, [x]) => T.logSoftmax(x!), [s(4, 6)]],
  ['rmsNorm', (_, [x, w]) => T.rmsNorm(x!, w!, 1e-5), [s(3, 5), s(5)]],
  ['layerNorm', (_, [x, w, b]) => T.layerNorm(x!, w!, b!, 1e-7), [s(3, 5), s(5), s(5)]],
  ['reshape', (_, [x]) => T.reshape(x!, [6, -1]), [s(2, 3, 4)]],
  ['transpose', (_, [x]) => T.transpose(x!, [2, 0, 1]), [s(2, 3, 4)]],
  ['expand', (_, [x]) => T.expand(x!, [2, 3, 5]), [s(3, 1)]],
  ['unsqueeze + squeeze', (_, [x]) => T.squeeze(T.mul(T.unsqueeze(x!, [0, 2]), 2), 0), [s(3, 4)]],
  ['concat', (_, [a, b]) => T.concat([a!, b!, a!], 1), [s(2, 3), s(2, 1)]],
  ['slice', (_, [x]) => T.slice(x!, 1, 1, 4), [s(2, 5, 3)]],
  [
    'split',
    (_, [x]) => {
      const [p, q] = T.split(x!, 0, 2);
      return T.mul(p!, q!);
    },
    [s(4, 3)],
  ],
  [
    // Nine pieces: a tree of Split nodes (at most 7 outputs each); pieces left unused get zeros.
    'splitSizes',
    (_, [x]) => {
      const ps = T.splitSizes(x!, 1, [1, 2, 3, 1, 2, 3, 1, 2, 5]);
      return T.concat([T.mul(ps[0]!, ps[3]!), ps[4]!, T.mul(ps[8]!, 3)], 1);
    },
    [s(2, 20)],
  ],
  ['gather (repeated rows)', (g, [x]) => T.gather(x!, indices(g, [0, 4, 4, 1, 0, 2], [2, 3])), [s(5, 3)]],
  ['scatterAddRows', (g, [b, u]) => T.scatterAddRows(b!, indices(g, [1, 1, 3], [3]), u!), [s(4, 2), s(3, 2)]],
  ['gatherElements', (g, [x]) => T.gatherElements(x!, indices(g, [4, 0, 1, 1, 3, 3], [3, 2]), 1), [s(3, 5)]],
  [
    'takeLast (token log-probs)',
    (g, [x]) => T.takeLast(T.logSoftmax(x!), indices(g, [2, 0, 5, 1], [2, 2])),
    [s(2, 2, 6)],
  ],
  [
    'scatterElementsAdd',
    (g, [b, u]) => T.scatterElementsAdd(b!, indices(g, [0, 0, 2, 1], [2, 2]), u!, 1),
    [s(2, 3), s(2, 2)],
  ],
  ['cumsum', (_, [x]) => T.cumsum(x!, 1), [s(2, 5)]],
  ['cumsum (reverse, exclusive)', (_, [x]) => T.cumsum(x!, 0, { reverse: true, exclusive: true }), [s(4, 2)]],
  ['tril', (_, [x]) => T.tril(x!), [s(2, 4, 4)]],
  ['triu (k=1)', (_, [x]) => T.triu(x!, 1), [s(3, 3)]],
  ['fan-out (x used 3 times)', (_, [x]) => T.add(T.mul(x!, x!), T.exp(x!)), [s(2, 3)]],
];

describe('vector-Jacobian rules agree with central finite differences (float64)', () => {
  it.each(CASES)('%s', async (_name, build, inputs) => {
    const { maxRelError, checked } = await gradcheck(build, inputs);
    expect(checked).toBeGreaterThan(0);
    expect(maxRelError).toBeLessThan(1e-6);
  });
});

describe('end to end', () => {
  it('a two-layer MLP with a cross-entropy loss', async () => {
    const { maxRelError } = await gradcheck(
      (g, [x, w1, b1, w2]) => {
        const h = T.gelu(T.add(T.matmul(x!, w1!), b1!));
        const logits = T.matmul(h, w2!);
        const targets = indices(g, [1, 0, 2, 2], [4]);
        return T.neg(T.mean(T.takeLast(T.logSoftmax(logits), targets)));
      },
      [s(4, 3), s(3, 5), s(5), s(5, 3)],
    );
    expect(maxRelError).toBeLessThan(1e-6);
  });

  it('a causal multi-head attention block with RMSNorm and a residual', async () => {
    const [B, Tn, C, H] = [2, 3, 4, 2];
    const D = C / H;
    const { maxRelError } = await gradcheck(
      (g, [x, wq, wk, wv, wo, norm]) => {
        const n = T.rmsNorm(x!, norm!, 1e-6);
        const heads = (t: Tensor) => T.transpose(T.reshape(T.matmul(n, t), [B, Tn, H, D]), [0, 2, 1, 3]);
        const [q, k, v] = [heads(wq!), heads(wk!), heads(wv!)];
        const scores = T.mul(T.matmul(q, T.transposeLast(k)), 1 / Math.sqrt(D)); // [B,H,T,T]
        const ones = T.expand(T.scalar(g, 1, 'float64'), [Tn, Tn]);
        const causal = T.greater(T.tril(ones), 0);
        const att = T.softmax(T.where(causal, scores, -1e9));
        const y = T.reshape(T.transpose(T.matmul(att, v), [0, 2, 1, 3]), [B, Tn, C]);
        return T.add(x!, T.matmul(y, wo!));
      },
      [s(B, Tn, C), s(C, C), s(C, C), s(C, C), s(C, C), pos(C)],
    );
    expect(maxRelError).toBeLessThan(1e-6);
  });
});

describe('erf and the exact GELU (float32: ONNX Runtime has no float64 Erf kernel)', () => {
  it('forward as a float64 erf gives it, and the gradient of ½x(1 + erf(x/√2)) as central differences do', async () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [7]);
    const y = T.geluExact(x);
    const [dx] = grad(T.reduceSum(y), [x]);
    const session = await ort.InferenceSession.create(compile(g, { e: T.erf(x), y, dx: dx! }).bytes);
    const xs = [-2.5, -1.2, -0.3, 0, 0.4, 1.1, 2.7];
    const run = async (v: number[]) =>
      session.run({ x: new ort.Tensor('float32', Float32Array.from(v), [7]) });
    const out = await run(xs);
    const gelu = (v: number) => 0.5 * v * (1 + erf(v / Math.SQRT2));
    xs.forEach((v, i) => {
      expect((out.e!.data as Float32Array)[i]).toBeCloseTo(erf(v), 6);
      expect((out.y!.data as Float32Array)[i]).toBeCloseTo(gelu(v), 6);
      const h = 1e-3;
      const fd = (gelu(v + h) - gelu(v - h)) / (2 * h);
      expect((out.dx!.data as Float32Array)[i]).toBeCloseTo(fd, 4);
    });
  });
});

describe('stopGradient', () => {
  it('blocks exactly its own path: d/dx [x · sg(eˣ)] = eˣ', async () => {
    const g = new Graph();
    const x = g.input('x', 'float64', [3]);
    const [dx] = grad(T.reduceSum(T.mul(x, T.stopGradient(T.exp(x)))), [x]);
    const session = await ort.InferenceSession.create(compile(g, { dx: dx! }).bytes);
    const xs = [-1, 0.5, 2];
    const out = await session.run({ x: new ort.Tensor('float64', Float64Array.from(xs), [3]) });
    const dxs = [...(out.dx!.data as Float64Array)];
    for (const [i, x] of xs.entries()) expect(dxs[i]).toBeCloseTo(Math.exp(x), 14);
  });
});

describe('trace-time errors name the op and the shapes', () => {
  it('rejects shapes that do not broadcast', () => {
    const g = new Graph();
    expect(() => T.add(g.input('a', 'float32', [2, 3]), g.input('b', 'float32', [4]))).toThrow(
      'add(float32[2, 3], float32[4]): shapes [2, 3] and [4] do not broadcast',
    );
  });

  it('rejects a matmul with mismatched inner dims', () => {
    const g = new Graph();
    expect(() => T.matmul(g.input('a', 'float32', ['B', 3]), g.input('b', 'float32', [4, 2]))).toThrow(
      /matmul\(float32\[B, 3\], float32\[4, 2\]\): inner dims differ: 3 vs 4/,
    );
  });

  it('refuses to differentiate through argmax instead of returning zeros', () => {
    const g = new Graph();
    const w = g.input('w', 'float32', [4]);
    const loss = T.reduceSum(T.cast(T.argmax(w, 0), 'float32'));
    expect(() => grad(loss, [w])).toThrow(/only through non-differentiable ops \(argmax\)/);
  });

  it('gives zeros (no error) for a parameter the loss does not depend on', () => {
    const g = new Graph();
    const [a, b] = [g.input('a', 'float32', [2]), g.input('b', 'float32', [3])];
    const [, gb] = grad(T.reduceSum(T.mul(a, a)), [a, b]);
    expect(gb!.shape).toEqual([3]);
  });
});
