/**
 * `duel testbed compare` end to end at toy sizes: two seeds × two judges through the real suite,
 * models built once per seed, mean ± sd tables, charts and best-of-n graded by the oracle.
 */
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { BestOfNCell, CompareCell } from '../../src/testbed/compare.js';
import { fileTempDir } from '../helpers/tmp.js';
import { duel, TOY } from '../helpers/toy.js';

const root = fileTempDir('duel-compare-');

const compare = (args: string[]) => duel(['testbed', 'compare', ...args]);

describe('duel testbed compare', () => {
  it('runs every seed and judge, aggregates mean ± sd, draws the charts and grades best-of-n', async () => {
    const out = join(root, 'cmp');
    const args = ['--algos', 'sppo', '--rounds', '2', '--seeds', '2', '--judges', 'oracle,learned'];
    const { code, stderr } = await compare([
      ...args,
      '--games',
      'default',
      '--best-of-n',
      '1,8',
      '--jobs',
      '2',
      '--out',
      out,
      ...TOY,
    ]);
    expect(code, stderr.slice(-3000)).toBe(0);
    // Two runs at a time, each reported as it finishes.
    expect(stderr).toMatch(/\[4\/4\] default (oracle|learned) sppo seed [12]: .* ETA 0 s/);
    const r = JSON.parse(readFileSync(join(out, 'compare.json'), 'utf8')) as {
      cells: CompareCell[];
      best_of_n: BestOfNCell[];
    };
    expect(r.cells.map((c) => `${c.game}/${c.judge}/${c.algo}/${c.seeds}`)).toEqual([
      'default/oracle/sppo/2',
      'default/learned/sppo/2',
    ]);
    for (const c of r.cells) {
      expect(c.rounds).toHaveLength(3);
      // The weight average of the last half (round 2) is graded for every seed.
      expect(c.averaged?.exploitability.mean).toBeGreaterThanOrEqual(0);
      expect(c.rounds[1]!.exploitability.sd).toBeGreaterThanOrEqual(0);
      expect(c.rounds[1]!.win_rate_vs_ref.mean).toBeGreaterThan(0);
      expect(c.rounds[1]!.win_rate_vs_ref.mean).toBeLessThan(1);
      // Each round's style mix, one share per style, and the judge graded on every seed.
      expect(c.styles).toHaveLength(3);
      for (const r of c.styles!) {
        expect(r).toHaveLength(3);
        for (const share of r) expect(share.mean).toBeGreaterThanOrEqual(0);
        expect(r.reduce((a, x) => a + x.mean, 0)).toBeLessThanOrEqual(1 + 1e-9);
      }
      expect(c.judge_fidelity!.cross_entropy_floor.mean).toBeGreaterThan(0);
      expect(c.judge_fidelity!.cycle_probs).toHaveLength(3);
    }
    // One build per seed, shared by both judges' runs (two of which ran at once).
    expect(readdirSync(join(out, 'models')).sort()).toEqual(['default-seed1', 'default-seed2']);
    for (const run of readdirSync(join(out, 'runs')))
      expect(existsSync(join(out, 'runs', run, 'models'))).toBe(false);
    // A perfect judge picking the best of 8 beats the policy itself.
    const oracleRef = r.best_of_n.find((b) => b.judge === 'oracle' && b.policy === 'π_ref')!;
    expect(oracleRef.rows.map((x) => x.n)).toEqual([1, 8]);
    expect(oracleRef.rows[1]!.win_rate_vs_ref.mean).toBeGreaterThan(
      oracleRef.rows[0]!.win_rate_vs_ref.mean + 0.1,
    );
    expect(oracleRef.rows[1]!.quality.mean).toBeGreaterThan(oracleRef.rows[0]!.quality.mean);
    const md = readFileSync(join(out, 'RESULTS.md'), 'utf8');
    expect(md).toMatch(/### default game, oracle judge \(2 seeds, 2 rounds\)/);
    expect(md).toMatch(/\| sppo \| \d\.\d{3} ± \d\.\d{3} \|/);
    expect(readdirSync(join(out, 'plots'))).toContain('default-oracle-exploitability.svg');
    expect(readdirSync(join(out, 'plots'))).toContain('default-learned-sppo-styles.svg');
    expect(md).toMatch(
      /The learned judge the runs used, against P\* on 1 000 held-out pairs, .*cross-entropy \d\.\d{3} ± \d\.\d{3} \(floor/,
    );

    // Run again: every finished run is read back, nothing is trained again (no summary rewritten),
    // except a run graded before the weight average existed, which is run again and (the demo
    // being deterministic) gives the same figures.
    const runs = readdirSync(join(out, 'runs')).sort();
    const summaryOf = (run: string) => join(out, 'runs', run, 'summary.json');
    const old = JSON.parse(readFileSync(summaryOf(runs[0]!), 'utf8'));
    const averaged = old.averaged_last_half;
    delete old.averaged_last_half;
    writeFileSync(summaryOf(runs[0]!), JSON.stringify(old));
    const written = () => runs.map((run) => statSync(summaryOf(run)).mtimeMs);
    const before = written();
    // One job at a time this time: the same runs, cells in the same order.
    const again = await compare([...args, '--games', 'default', '--best-of-n', '', '--out', out, ...TOY]);
    expect(again.code, again.stderr.slice(-2000)).toBe(0);
    expect(written().slice(1)).toEqual(before.slice(1));
    expect(written()[0]).not.toEqual(before[0]);
    expect(JSON.parse(readFileSync(summaryOf(runs[0]!), 'utf8')).averaged_last_half).toEqual(averaged);
    const figures = (cells: CompareCell[]) => cells.map(({ seconds: _, ...c }) => c);
    const cellsAgain = JSON.parse(readFileSync(join(out, 'compare.json'), 'utf8')).cells as CompareCell[];
    expect(figures(cellsAgain)).toEqual(figures(r.cells));
  }, 300_000);

  it('refuses an unknown algorithm, judge or game, and a job count below 1', async () => {
    const a = await compare(['--algos', 'sppo,nope', '--out', join(root, 'x')]);
    expect(a.code).toBe(2);
    expect(a.stderr).toMatch(/--algos: unknown algorithm\(s\) nope/);
    const b = await compare(['--algos', 'sppo', '--judges', 'human', '--out', join(root, 'x')]);
    expect(b.stderr).toMatch(/--judges: must be oracle and\/or learned/);
    const c = await compare(['--algos', 'sppo', '--games', 'chess', '--out', join(root, 'x')]);
    expect(c.code).toBe(2);
    expect(c.stderr).toMatch(/--games: unknown game 'chess'/);
    const d = await compare(['--algos', 'sppo', '--jobs', '0', '--out', join(root, 'x')]);
    expect(d.code).toBe(2);
    expect(d.stderr).toMatch(/--jobs.*must be a positive integer/);
  });
});
