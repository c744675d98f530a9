/** The report's charts as a reader sees them, rendered in headless Chromium: nothing cut off, axes legible. */
import { describe, expect, it } from 'vitest';
import { lineChart, stackedBars, tickStep } from '../../src/report/svg.js';
import { renderInChromium } from '../helpers/browser.js';

const page = (svgs: string[]) => `<!doctype html><html><body>${svgs.join('\n')}</body></html>`;
const rounds = Array.from({ length: 41 }, (_, r) => r);

describe('report charts', () => {
  it('label the x axis every k-th round, at most about ten labels', () => {
    expect([5, 10, 11, 40, 41, 200].map((span) => tickStep(span))).toEqual([1, 1, 2, 5, 5, 20]);
  });

  it('show every legend name and axis label of a 40-round run in full, without overlaps', () => {
    const chart = lineChart({
      title: 'Exploitability (0 = Nash equilibrium)',
      xLabel: 'round',
      yMin: 0,
      series: [
        { name: 'last iterate', points: rounds.map((r) => [r, 0.4 / (1 + r)]) },
        {
          name: 'of which styles (every sample full quality)',
          points: rounds.map((r) => [r, 0.2 / (1 + r)]),
        },
        { name: 'perfect update (tabular, styles only)', points: rounds.map((r) => [r, 0.1]), dashed: true },
        { name: 'weight average of the last half (one model)', points: [[40, 0.04]] },
      ],
    });
    const bars = stackedBars({
      title: 'Style distribution per round',
      xLabel: 'round',
      bars: rounds.map((x) => ({ x, shares: [0.5, 0.3, 0.2] })),
      names: ['style 0', 'style 1', 'style 2'],
    });
    const seen = renderInChromium(page([chart, bars]));
    expect(seen.clipped).toEqual([]);
    expect(seen.overlappingTicks).toEqual([]);
  });
});
