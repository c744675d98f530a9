/**
 * The fault campaign (test/fault/campaign.ts) over several seeds: every run completes or fails
 * with a reason, and nothing is lost. CI runs a few seeds; docs/RELIABILITY.md's figures come from
 * a longer campaign: DUEL_FAULT_RUNS=40 DUEL_FAULT_SEED=1000 npx vitest run test/fault/campaign.test.ts
 */
import { describe, expect, it } from 'vitest';
import { type CampaignRun, faultRun, tally } from './campaign.js';

const RUNS = Number(process.env.DUEL_FAULT_RUNS ?? 4);
const FIRST_SEED = Number(process.env.DUEL_FAULT_SEED ?? 20261124);

describe('the fault campaign', () => {
  it(
    `kills processes at random in ${RUNS} seeded runs: each completes or fails cleanly, nothing is lost`,
    async () => {
      const runs: CampaignRun[] = [];
      for (let i = 0; i < RUNS; i++) {
        const r = await faultRun(FIRST_SEED + i);
        runs.push(r);
        process.stderr.write(
          `fault run ${i + 1}/${RUNS} (seed ${r.seed}): ${r.outcome} in ${r.seconds.toFixed(1)} s after ${r.faults.map((f) => `${f.target} at ${(f.atMs / 1000).toFixed(1)} s (${f.stage})`).join(', ') || 'no fault'}${r.outcome === 'completed' ? '' : `: ${r.message}`}${r.lost.length ? `; LOST: ${r.lost.join('; ')}` : ''}\n`,
        );
      }
      process.stderr.write(`fault campaign: ${JSON.stringify(tally(runs))}\n`);
      for (const r of runs) {
        expect(r.lost, `seed ${r.seed}`).toEqual([]);
        expect(r.outcome, `seed ${r.seed}: ${r.message}`).not.toBe('hung');
      }
      expect(tally(runs).faults).toBeGreaterThan(0);
    },
    RUNS * 200_000,
  );
});
