/**
 * Gradient checkpointing (T.checkpoint): the gradients are the ones of the same graph without
 * segments, bit for bit on the cpu provider (the second trace computes the same values in the same
 * order), and the backward pass reads nothing a segment computed in the forward pass except the
 * hidden states passed between segments, which is what lets ONNX Runtime free the rest.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { compile, Graph, grad, Runtime, T, type Tensor } from '../../src/engine/index.js';
import { rng } from '../../src/models/common/rng.js';

const WIDTH = 6;
const LAYERS = 3;

/**
 * x → LAYERS × (x + tanh(softmax(x·W_i)·V_i)), summed through a fixed readout; in `dtype` from
 * float32 inputs (float16: the segments, and the gates between them, compute in half).
 */
function build(checkpointing: boolean, dtype: 'float32' | 'float16' = 'float32') {
  const g = new Graph();
  const x = g.input('x', 'float32', [4, WIDTH]);
  const params = Array.from({ length: LAYERS }, (_, i) => ({
    w: g.input(`w${i}`, 'float32', [WIDTH, WIDTH]),
    v: g.input(`v${i}`, 'float32', [WIDTH, WIDTH]),
  }));
  const as = (t: Tensor) => (dtype === 'float32' ? t : T.cast(t, dtype));
  const block = (h: Tensor, i: number) =>
    T.add(h, T.tanh(T.matmul(T.softmax(T.matmul(h, as(params[i]!.w)), -1), as(params[i]!.v))));
  let h = as(x);
  for (let i = 0; i < LAYERS; i++) {
    h = checkpointing ? (T.checkpoint([h], ([y]) => [block(y!, i)])[0] as Tensor) : block(h, i);
  }
  const wide = T.cast(h, 'float32');
  const loss = T.reduceSum(T.mul(wide, T.sin(wide)), [0, 1], false);
  const wrt = [x, ...params.flatMap((p) => [p.w, p.v])];
  return { g, loss, wrt, grads: grad(loss, wrt) };
}

function feeds() {
  const r = rng(3);
  const tensor = (n: number) => Float32Array.from({ length: n }, () => r() * 2 - 1);
  const out: Record<string, { dtype: 'float32'; dims: number[]; data: Float32Array }> = {
    x: { dtype: 'float32', dims: [4, WIDTH], data: tensor(4 * WIDTH) },
  };
  for (let i = 0; i < LAYERS; i++) {
    out[`w${i}`] = { dtype: 'float32', dims: [WIDTH, WIDTH], data: tensor(WIDTH * WIDTH) };
    out[`v${i}`] = { dtype: 'float32', dims: [WIDTH, WIDTH], data: tensor(WIDTH * WIDTH) };
  }
  return out;
}

/**
 * Reads, by the backward pass, of tensors a segment computed that the forward pass used only inside
 * it: what checkpointing must not keep. A segment's output that the rest of the forward pass reads
 * (the hidden state it passes on) is kept, and may be read.
 */
function readsOfIntermediates(g: Graph, loss: Tensor): string[] {
  const segmentOf = (id: number) => g.checkpoints.findIndex((s) => s.start <= id && id < s.end);
  const passedOn = new Set<string>();
  for (const node of g.nodes.slice(0, loss.node.id + 1)) {
    for (const t of node.inputs) {
      const from = segmentOf(t.node.id);
      if (from >= 0 && segmentOf(node.id) !== from) passedOn.add(`${t.node.id}:${t.index}`);
    }
  }
  const reads: string[] = [];
  for (const node of g.nodes.slice(loss.node.id + 1)) {
    for (const t of node.inputs) {
      if (segmentOf(t.node.id) >= 0 && !passedOn.has(`${t.node.id}:${t.index}`))
        reads.push(`${node.op.name}#${node.id} reads ${t}`);
    }
  }
  return reads;
}

describe('gradient checkpointing', () => {
  const runtimes = {
    cpu: new Runtime({ workers: 1, intraOpThreads: 1 }),
    webgpu: new Runtime({ workers: 1, intraOpThreads: 1, provider: 'webgpu' }),
  };
  const runtime = runtimes.cpu;
  afterAll(() => Promise.all(Object.values(runtimes).map((r) => r.close())));

  async function gradients(
    checkpointing: boolean,
    provider: keyof typeof runtimes,
    dtype: 'float32' | 'float16',
  ) {
    const { g, loss, grads } = build(checkpointing, dtype);
    const outputs = Object.fromEntries([['loss', loss], ...grads.map((t, i) => [`g${i}`, t] as const)]);
    const session = await runtimes[provider].load(compile(g, outputs, 'checkpointed'));
    const out = await session.run(feeds(), Object.keys(outputs));
    await session.release();
    return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, Array.from(v.data as Float32Array)]));
  }

  const cases = (['cpu', 'webgpu'] as const).flatMap((p) =>
    (['float32', 'float16'] as const).map((d) => [p, d] as const),
  );
  it.each(cases)('gives the gradients of the graph without segments (%s, %s)', async (provider, dtype) => {
    const plain = await gradients(false, provider, dtype);
    const checkpointed = await gradients(true, provider, dtype);
    expect(Object.keys(checkpointed).sort()).toEqual(Object.keys(plain).sort());
    // Bit for bit, except float16 on the cpu provider: it has few half kernels, so ONNX
    // Runtime computes runs of half ops in float32 between casts it inserts, and the gates
    // (half Adds it has) split those runs at other places: a half's rounding apart.
    const exact = !(provider === 'cpu' && dtype === 'float16');
    for (const [name, values] of Object.entries(plain)) {
      if (exact) expect(checkpointed[name], name).toEqual(values);
      else {
        const scale = Math.max(...values.map(Math.abs));
        const apart = Math.max(...values.map((v, i) => Math.abs(v - checkpointed[name]![i]!)));
        expect(apart / scale, name).toBeLessThan(2 ** -10);
      }
    }
    // Every parameter and the input got a gradient that is not all zeros.
    for (let i = 0; i < 1 + 2 * LAYERS; i++) expect(plain[`g${i}`]!.some((v) => v !== 0)).toBe(true);
  });

  it('leaves the backward pass reading only the hidden states passed between segments', () => {
    const { g, loss } = build(true);
    expect(g.checkpoints).toHaveLength(LAYERS);
    expect(readsOfIntermediates(g, loss)).toEqual([]);
    // Without segments the backward pass reads the layers' softmaxes and products.
    const plain = build(false);
    plain.g.checkpoints.push({ start: 0, end: plain.loss.node.id, inputs: [] });
    expect(readsOfIntermediates(plain.g, plain.loss).length).toBeGreaterThan(LAYERS);
  });

  it('recomputes each segment only after the gradient reaching it exists', () => {
    const { g, loss } = build(true);
    const after = g.nodes.filter((n) => n.id > loss.node.id && n.op.name === 'after');
    expect(after).toHaveLength(LAYERS);
    // Each gate reads the gradient of the segment's output: a node of the backward pass.
    for (const node of after) expect(node.inputs[1]!.node.id).toBeGreaterThan(loss.node.id);
  });

  it('passes its input through unchanged when the gradient it waits for is not finite', async () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [3]);
    const dep = g.input('dep', 'float32', [2]);
    const session = await runtime.load(compile(g, { y: T.checkpointGate(x, dep) }, 'gate'));
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY]) {
      const out = await session.run(
        {
          x: { dtype: 'float32', dims: [3], data: Float32Array.from([1.5, -2, 0.25]) },
          dep: { dtype: 'float32', dims: [2], data: Float32Array.from([bad, 1]) },
        },
        ['y'],
      );
      expect(Array.from(out.y!.data as Float32Array)).toEqual([1.5, -2, 0.25]);
    }
    await session.release();
  });

  it('refuses nested segments and segments that draw random numbers', () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [2, 3]);
    expect(() => T.checkpoint([x], ([y]) => T.checkpoint([y!], ([z]) => [T.tanh(z!)]))).toThrow(
      'segments do not nest',
    );
    expect(() => T.checkpoint([x], ([y]) => [T.add(y!, T.randomUniformLike(y!, 1))])).toThrow(
      'cannot draw (randomUniform)',
    );
    // A refused segment leaves the graph able to trace another.
    expect(T.checkpoint([x], ([y]) => [T.tanh(y!)])).toHaveLength(1);
  });
});
