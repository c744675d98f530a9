import { afterAll, describe, expect, it } from 'vitest';
import { Graph } from '../../src/engine/graph.js';
import { compile } from '../../src/engine/onnx.js';
import * as T from '../../src/engine/ops/index.js';
import { cpuLimit, Runtime } from '../../src/engine/runtime/runtime.js';

const runtime = new Runtime({ workers: 2, intraOpThreads: 1 });
afterAll(() => runtime.close());

/** A graph that takes a while: `reps` chained 256×256 matmuls. */
function heavy(reps: number) {
  const g = new Graph();
  const x = g.input('x', 'float32', [256, 256]);
  let y = x;
  for (let i = 0; i < reps; i++) y = T.tanh(T.matmul(y, x));
  return compile(g, { y: T.reduceSum(y) });
}

describe('Runtime', () => {
  it('keeps the event loop responsive while a session computes', async () => {
    const session = await runtime.load(heavy(600));
    const x = { dtype: 'float32' as const, dims: [256, 256], data: new Float32Array(256 * 256).fill(0.001) };
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const started = Date.now();
    await session.run({ x });
    const elapsed = Date.now() - started;
    clearInterval(timer);
    // The timer fired through the run: the computation did not hold the main thread.
    expect(elapsed).toBeGreaterThan(50);
    expect(ticks).toBeGreaterThan(elapsed / 5 / 4);
  });

  it('runs sessions on different workers side by side and returns correct values', async () => {
    const g = new Graph();
    const a = g.input('a', 'float64', ['N']);
    const model = compile(g, { s: T.reduceSum(T.mul(a, a)) });
    const [s1, s2] = await Promise.all([runtime.load(model), runtime.load(model)]);
    const feed = (xs: number[]) => ({
      a: { dtype: 'float64' as const, dims: [xs.length], data: Float64Array.from(xs) },
    });
    const [r1, r2] = await Promise.all([s1.run(feed([1, 2, 3])), s2.run(feed([4]))]);
    expect(r1.s!.data[0]).toBe(14);
    expect(r2.s!.data[0]).toBe(16);
  });

  it('names the missing execution provider', async () => {
    const gpu = new Runtime({ provider: 'cuda' });
    await expect(gpu.load(heavy(1))).rejects.toThrow(
      /execution provider 'cuda' is not available: [\s\S]*ONNXRUNTIME_NODE_INSTALL=cuda12/,
    );
    await gpu.close();
  });

  it('reads the CPU limit', () => {
    expect(cpuLimit()).toBeGreaterThanOrEqual(1);
  });
});
