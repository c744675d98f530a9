/** `duel bench judge` on small shapes: its figures are consistent with one another. */
import { describe, expect, it } from 'vitest';
import { runJudgeBench, SMALL_JUDGE_SHAPES } from '../../bench/judge.js';

describe('duel bench judge', () => {
  it('times a K×K comparison of each judge and relates it to the FLOPs a pass needs and the ceiling', async () => {
    const lines: string[] = [];
    const r = await runJudgeBench({
      provider: 'cpu',
      dtype: 'float16',
      shapes: SMALL_JUDGE_SHAPES,
      k: 3,
      source: 12,
      candidate: 6,
      reps: 2,
      log: (l) => lines.push(l),
    });
    const [p, rm] = r.rows;
    // float16 asked: both judges compute in it.
    expect(p).toMatchObject({
      judge: 'pairrm',
      dtype: 'float16',
      k: 3,
      passes: 6,
      tokens_per_pass: 12 + 3 + 2 * (6 + 3),
    });
    expect(rm).toMatchObject({ judge: 'reward', dtype: 'float16', k: 3, passes: 3, tokens_per_pass: 18 });
    for (const row of r.rows) {
      expect(row.passes_per_s).toBeCloseTo((row.passes * 1000) / row.compare_ms, 6);
      expect(row.fraction_of_ceiling).toBeCloseTo(row.achieved_gflops / r.ceiling_gflops, 9);
    }
    // 2 FLOPs per non-embedding weight per token at least.
    expect(rm!.gflop_per_pass * 1e9).toBeGreaterThan(2 * (rm!.parameters - 64 * 32) * 18);
    expect(lines.some((l) => l.includes('PairRM compare K=3 2/2'))).toBe(true);
  });
});
