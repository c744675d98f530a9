import { spawn } from 'node:child_process';
import { once } from 'node:events';
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

  it('refuses hostOutputs that name no output of the model, naming them', async () => {
    const g = new Graph();
    const a = g.input('a', 'float32', [2]);
    const model = compile(g, { s: T.reduceSum(a), y: T.mul(a, 2) });
    await expect(runtime.load(model, { outputsOnDevice: true, hostOutputs: ['s', 'loss'] })).rejects.toThrow(
      'hostOutputs: loss not outputs of the model',
    );
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

  it('frees a dropped state only once the runs that read it have finished', async () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [4096]);
    const session = await runtime.load(compile(g, { s: T.reduceSum(T.mul(x, 2)) }));
    const ones = () => ({ dtype: 'float32' as const, dims: [4096], data: new Float32Array(4096).fill(1) });
    for (let i = 0; i < 5; i++) {
      await session.setState('dropped', { x: ones() });
      // Both requests reach the worker together: the run has read the state when the drop is
      // handled, and onnxruntime-node starts the run only after.
      const [out] = await Promise.all([
        session.run({}, ['s'], { state: 'dropped', reads: { x: 'x' }, writes: {} }),
        session.dropState('dropped'),
      ]);
      expect(out.s!.data[0]).toBe(8192);
    }
  });

  it('names the missing execution provider', async () => {
    const gpu = new Runtime({ provider: 'cuda' });
    await expect(gpu.load(heavy(1))).rejects.toThrow(
      /execution provider 'cuda' is not available: [\s\S]*bash scripts\/setup\.sh --cuda/,
    );
    await gpu.close();
  });

  it('reads the CPU limit', () => {
    expect(cpuLimit()).toBeGreaterThanOrEqual(1);
  });

  it('closes at once after starting, waiting for the workers to load ONNX Runtime, and lets the process exit with its code', async () => {
    // Terminating a worker while onnxruntime-node initialises aborts the whole process (SIGABRT):
    // a `duel serve` preload failure died that way instead of exiting 2 (about 1 close in 25 in a
    // sweep over the start-up window). close() now waits for each worker's ready message; were
    // that message lost, these children would hang past the timeout instead of exiting.
    const dist = new URL('../../dist/src/engine/index.js', import.meta.url).href;
    const script = (delayMs: number) => `
      const { Runtime } = await import(${JSON.stringify(dist)});
      const r = new Runtime({ workers: 3, intraOpThreads: 1 });
      await new Promise((res) => setTimeout(res, ${delayMs}));
      await r.close();
      process.exit(2);`;
    const exits = await Promise.all(
      [0, 60, 120, 180].map(async (delayMs) => {
        const child = spawn(process.execPath, ['--input-type=module', '-e', script(delayMs)], {
          stdio: 'ignore',
        });
        const [code, signal] = await once(child, 'exit');
        return { code, signal };
      }),
    );
    expect(exits).toEqual(Array(4).fill({ code: 2, signal: null }));
  }, 30_000);
});
