/** inPool: what `duel testbed compare --jobs N` relies on to run N demos at once. */
import { describe, expect, it } from 'vitest';
import { inPool } from '../../src/testbed/compare.js';

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('inPool', () => {
  it('runs at most `jobs` at once, starts in order and returns results in the items’ order', async () => {
    let running = 0;
    let peak = 0;
    const started: number[] = [];
    const out = await inPool([30, 5, 20, 1, 10], 2, async (ms) => {
      started.push(ms);
      running++;
      peak = Math.max(peak, running);
      await tick(ms);
      running--;
      return ms * 2;
    });
    expect(out).toEqual([60, 10, 40, 2, 20]);
    expect(started).toEqual([30, 5, 20, 1, 10]);
    expect(peak).toBe(2);
  });

  it('with one job runs them one after another', async () => {
    let running = 0;
    let peak = 0;
    await inPool([3, 1, 2], 1, async (ms) => {
      running++;
      peak = Math.max(peak, running);
      await tick(ms);
      running--;
    });
    expect(peak).toBe(1);
  });

  it('throws the first failure after the running ones settle, and starts nothing after it', async () => {
    const started: string[] = [];
    let settled = 0;
    const run = inPool(['slow', 'bad', 'later', 'never'], 2, async (x) => {
      started.push(x);
      if (x === 'bad') {
        await tick(1);
        throw new Error('bad run');
      }
      await tick(20);
      settled++;
    });
    await expect(run).rejects.toThrow('bad run');
    expect(started).toEqual(['slow', 'bad']);
    expect(settled).toBe(1);
  });
});
