/** `duel bench weight-sync` end to end on the testbed-sized model: every case reaches the sampler. */
import { expect, it } from 'vitest';
import { runWeightSyncBench } from '../../bench/weight-sync.js';

it('times a full checkpoint and an adapter from the trainer to the sampler, and reports their bytes', async () => {
  const { rows } = await runWeightSyncBench({ models: ['testbed'], ranks: [4], rounds: 2, log: () => {} });
  expect(rows.map((r) => r.weights)).toEqual(['full', 4]);
  for (const r of rows) {
    expect(r.sync_ms).toHaveLength(2);
    expect(r.p95_ms).toBeGreaterThan(0);
    expect(r.trainer_rss_mb).toBeGreaterThan(0);
  }
  // An adapter of rank 4 is a fraction of the testbed model's bytes.
  expect(rows[1]!.checkpoint_bytes).toBeLessThan(rows[0]!.checkpoint_bytes / 2);
}, 120_000);
