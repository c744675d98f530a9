/** Random draws: seeded and reproducible per session, and distributed as asked. */
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { compile, Graph, T } from '../../src/engine/index.js';

const PROBS = [0.1, 0.2, 0.3, 0.4];

function sampler(seed: number, draws: number) {
  const g = new Graph();
  const logits = g.input('logits', 'float32', ['B', 4]);
  const uniform = T.randomUniformLike(T.cast(T.zeros(logits, ['B', 3]), 'float32'), seed + 1, 2, 5);
  return compile(g, { ids: T.multinomial(logits, draws, seed), uniform }).bytes;
}

const feeds = () => ({
  logits: new ort.Tensor('float32', Float32Array.from([...PROBS, ...PROBS].map(Math.log)), [2, 4]),
});

describe('seeded sampling', () => {
  it('two sessions with the same seed draw the same sequence; another seed draws another', async () => {
    const draw = async (seed: number) => {
      const s = await ort.InferenceSession.create(sampler(seed, 64));
      const first = await s.run(feeds());
      const second = await s.run(feeds());
      return [...(first.ids!.data as BigInt64Array), ...(second.ids!.data as BigInt64Array)].map(Number);
    };
    const [a, b, c] = [await draw(11), await draw(11), await draw(12)];
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
    // The generator advances between runs of one session: the second batch is new draws.
    expect(a.slice(0, 128)).not.toEqual(a.slice(128));
  });

  it('multinomial follows softmax(logits) and uniform draws stay in [low, high)', async () => {
    const s = await ort.InferenceSession.create(sampler(3, 20000));
    const out = await s.run(feeds());
    const ids = [...(out.ids!.data as BigInt64Array)].map(Number);
    const counts = [0, 0, 0, 0];
    for (const i of ids) counts[i]! += 1;
    for (const [k, n] of counts.entries()) expect(Math.abs(n / ids.length - PROBS[k]!)).toBeLessThan(0.01);
    const u = [...(out.uniform!.data as Float32Array)];
    expect(u.every((x) => x >= 2 && x < 5)).toBe(true);
    expect(out.uniform!.dims).toEqual([2, 3]);
  });
});
