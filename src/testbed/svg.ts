/**
 * Small self-contained SVG charts for run reports (a line chart and stacked bars): no plotting
 * library in Node draws to a string without a browser or a canvas binding, and these two shapes
 * are all the reports need.
 */
const W = 520;
const H = 300;
const PAD = { left: 56, right: 150, top: 34, bottom: 40 };
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export interface Series {
  name: string;
  points: [number, number][];
  dashed?: boolean;
}

function frame(title: string, xLabel: string, yMin: number, yMax: number, xMin: number, xMax: number) {
  const x = (v: number) =>
    PAD.left + ((v - xMin) / Math.max(1e-12, xMax - xMin)) * (W - PAD.left - PAD.right);
  const y = (v: number) =>
    H - PAD.bottom - ((v - yMin) / Math.max(1e-12, yMax - yMin)) * (H - PAD.top - PAD.bottom);
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    // The accessible name screen readers announce (and linters require of a standalone SVG).
    `<title>${esc(title)}</title>`,
    `<text x="${W / 2 - PAD.right / 2}" y="18" text-anchor="middle" font-size="13">${esc(title)}</text>`,
    `<line x1="${PAD.left}" y1="${H - PAD.bottom}" x2="${W - PAD.right}" y2="${H - PAD.bottom}" stroke="#333"/>`,
    `<line x1="${PAD.left}" y1="${PAD.top}" x2="${PAD.left}" y2="${H - PAD.bottom}" stroke="#333"/>`,
    `<text x="${(PAD.left + W - PAD.right) / 2}" y="${H - 8}" text-anchor="middle">${esc(xLabel)}</text>`,
  ];
  for (let i = 0; i <= 4; i++) {
    const v = yMin + ((yMax - yMin) * i) / 4;
    parts.push(
      `<line x1="${PAD.left - 4}" y1="${y(v)}" x2="${W - PAD.right}" y2="${y(v)}" stroke="#eee"/>`,
      `<text x="${PAD.left - 6}" y="${y(v) + 4}" text-anchor="end">${v.toFixed(2)}</text>`,
    );
  }
  return { x, y, parts };
}

export function lineChart(o: {
  title: string;
  xLabel: string;
  series: Series[];
  yMin?: number;
  yMax?: number;
}): string {
  const all = o.series.flatMap((s) => s.points);
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]).filter(Number.isFinite);
  const yMin = o.yMin ?? Math.min(0, ...ys);
  const yMax = o.yMax ?? Math.max(1e-9, ...ys);
  const xMin = Math.min(...xs, 0);
  const xMax = Math.max(...xs, 1);
  const { x, y, parts } = frame(o.title, o.xLabel, yMin, yMax, xMin, xMax);
  for (let r = Math.ceil(xMin); r <= xMax; r++)
    parts.push(`<text x="${x(r)}" y="${H - PAD.bottom + 14}" text-anchor="middle">${r}</text>`);
  o.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = s.points.filter((p) => Number.isFinite(p[1]));
    if (pts.length > 1)
      parts.push(
        `<polyline fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5,4"' : ''} points="${pts.map((p) => `${x(p[0])},${y(p[1])}`).join(' ')}"/>`,
      );
    for (const p of pts) parts.push(`<circle cx="${x(p[0])}" cy="${y(p[1])}" r="3" fill="${color}"/>`);
    const ly = PAD.top + 8 + i * 16;
    parts.push(
      `<line x1="${W - PAD.right + 10}" y1="${ly}" x2="${W - PAD.right + 28}" y2="${ly}" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5,4"' : ''}/>`,
      `<text x="${W - PAD.right + 32}" y="${ly + 4}">${esc(s.name)}</text>`,
    );
  });
  parts.push('</svg>');
  return parts.join('\n');
}

/** One bar per x (e.g. round), split into stacked shares (e.g. styles) that sum to 1. */
export function stackedBars(o: {
  title: string;
  xLabel: string;
  bars: { x: number; shares: number[] }[];
  names: string[];
}): string {
  const xMin = Math.min(...o.bars.map((b) => b.x)) - 0.5;
  const xMax = Math.max(...o.bars.map((b) => b.x)) + 0.5;
  const { x, y, parts } = frame(o.title, o.xLabel, 0, 1, xMin, xMax);
  const width = Math.max(4, (x(1) - x(0)) * 0.7);
  for (const b of o.bars) {
    let base = 0;
    b.shares.forEach((s, i) => {
      parts.push(
        `<rect x="${x(b.x) - width / 2}" y="${y(base + s)}" width="${width}" height="${y(base) - y(base + s)}" fill="${COLORS[i % COLORS.length]}"/>`,
      );
      base += s;
    });
    parts.push(`<text x="${x(b.x)}" y="${H - PAD.bottom + 14}" text-anchor="middle">${b.x}</text>`);
  }
  o.names.forEach((n, i) => {
    const ly = PAD.top + 8 + i * 16;
    parts.push(
      `<rect x="${W - PAD.right + 10}" y="${ly - 6}" width="12" height="12" fill="${COLORS[i % COLORS.length]}"/>`,
      `<text x="${W - PAD.right + 28}" y="${ly + 4}">${esc(n)}</text>`,
    );
  });
  parts.push('</svg>');
  return parts.join('\n');
}
