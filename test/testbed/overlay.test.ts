/** `duel testbed overlay`: compare results under labels, as a table and a chart per algorithm. */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { CompareCell } from '../../src/testbed/compare.js';
import { overlayCompares } from '../../src/testbed/overlay.js';
import { tempDirs } from '../helpers/tmp.js';

const tmp = tempDirs('duel-overlay-');
const s = (mean: number) => ({ mean, sd: 0.01 });
const cell = (algo: string, last: number): CompareCell => ({
  game: 'default',
  judge: 'oracle',
  algo,
  seeds: 3,
  rounds: [0.4, 0.2, last].map((e) => ({
    win_rate_vs_ref: s(1 - e),
    exploitability: s(e),
    style_entropy: s(1),
    quality: s(0.9),
  })),
  mixture: undefined,
  averaged: { win_rate_vs_ref: s(0.8), exploitability: s(last / 2), style_entropy: s(1), quality: s(0.9) },
  floor: 0.02,
  best_exploitability: s(last),
  seconds: s(100),
});

function compareDir(root: string, name: string, cells: CompareCell[]): string {
  const dir = join(root, name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'compare.json'), JSON.stringify({ cells }));
  return dir;
}

describe('duel testbed overlay', () => {
  it('puts each algorithm’s results under every label in one table and one chart per metric', () => {
    const root = tmp();
    const runs = [
      { label: '0', dir: compareDir(root, 'a', [cell('inpo', 0.08), cell('sppo', 0.3)]) },
      { label: '1', dir: compareDir(root, 'b', [cell('inpo', 0.09), cell('sppo', 0.35)]) },
    ];
    const md = overlayCompares(runs, join(root, 'out'), 'max_staleness');
    const rows = md.trim().split('\n').slice(2);
    expect(rows.map((r) => r.split(' | ').slice(0, 2).join(' | '))).toEqual([
      '| inpo (default, oracle) | 0',
      '| inpo (default, oracle) | 1',
      '| sppo (default, oracle) | 0',
      '| sppo (default, oracle) | 1',
    ]);
    expect(rows[1]).toContain('0.090 ± 0.010');
    const svg = readFileSync(join(root, 'out', 'plots', 'default-oracle-inpo-exploitability.svg'), 'utf8');
    expect(svg).toContain('max_staleness 0');
    expect(svg).toContain('max_staleness 1');
    expect(readFileSync(join(root, 'out', 'overlay.md'), 'utf8')).toBe(md);
  });

  it('names the label whose directory holds no compare result', () => {
    const root = tmp();
    expect(() => overlayCompares([{ label: 'x', dir: join(root, 'none') }], join(root, 'out'), 's')).toThrow(
      /x: no readable compare.json/,
    );
  });
});
