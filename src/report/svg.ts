/**
 * Small self-contained SVG charts for run reports (a line chart and stacked bars): no plotting
 * library in Node draws to a string without a browser or a canvas binding, and these two shapes
 * are all the reports need. The legend sits below the plot, one entry a line, and the chart grows
 * to hold it, so no series name is cut; the x axis labels every k-th value, k chosen so that at
 * most about ten labels share the axis.
 */
const W = 560;
const PLOT_H = 260;
const PAD = { left: 56, right: 20, top: 34, bottom: 40 };
const LEGEND_LINE = 16;
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];

/** Text for HTML and SVG, attribute values included. */
export const esc = (t: string) =>
  t.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** A figure for a report: `d` decimals, '–' when there is none. */
export const fixed = (x: number | undefined, d = 3) =>
  x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(d);

export interface Series {
  name: string;
  points: [number, number][];
  dashed?: boolean;
}

/** The smallest of 1, 2, 5, 10, 20, 50, … that puts at most `most` labels on a span of `span`. */
export function tickStep(span: number, most = 10): number {
  for (let scale = 1; ; scale *= 10)
    for (const m of [1, 2, 5]) if (span / (m * scale) <= most) return m * scale;
}

/** Integer x positions from `xMin` to `xMax` that get a label. */
function xTicks(xMin: number, xMax: number): number[] {
  const step = tickStep(xMax - xMin);
  const out: number[] = [];
  for (let v = Math.ceil(xMin / step) * step; v <= xMax; v += step) out.push(v);
  return out;
}

function frame(
  o: { title: string; xLabel: string; legend: number },
  yMin: number,
  yMax: number,
  xMin: number,
  xMax: number,
) {
  const height = PLOT_H + o.legend * LEGEND_LINE + (o.legend > 0 ? 8 : 0);
  const axisY = PLOT_H - PAD.bottom;
  const x = (v: number) =>
    PAD.left + ((v - xMin) / Math.max(1e-12, xMax - xMin)) * (W - PAD.left - PAD.right);
  const y = (v: number) => axisY - ((v - yMin) / Math.max(1e-12, yMax - yMin)) * (axisY - PAD.top);
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" viewBox="0 0 ${W} ${height}" font-family="sans-serif" font-size="11">`,
    // The accessible name screen readers announce (and linters require of a standalone SVG).
    `<title>${esc(o.title)}</title>`,
    `<text x="${W / 2}" y="18" text-anchor="middle" font-size="13">${esc(o.title)}</text>`,
    `<line x1="${PAD.left}" y1="${axisY}" x2="${W - PAD.right}" y2="${axisY}" stroke="#333"/>`,
    `<line x1="${PAD.left}" y1="${PAD.top}" x2="${PAD.left}" y2="${axisY}" stroke="#333"/>`,
    `<text x="${(PAD.left + W - PAD.right) / 2}" y="${axisY + 30}" text-anchor="middle">${esc(o.xLabel)}</text>`,
  ];
  // Enough decimals that neighbouring y labels differ (a loss near zero spans 1e-4).
  const digits = Math.min(5, Math.max(2, Math.ceil(-Math.log10((yMax - yMin) / 4)) + 1));
  for (let i = 0; i <= 4; i++) {
    const v = yMin + ((yMax - yMin) * i) / 4;
    parts.push(
      `<line x1="${PAD.left - 4}" y1="${y(v)}" x2="${W - PAD.right}" y2="${y(v)}" stroke="#eee"/>`,
      `<text x="${PAD.left - 6}" y="${y(v) + 4}" text-anchor="end">${v.toFixed(digits)}</text>`,
    );
  }
  for (const v of xTicks(xMin, xMax))
    parts.push(`<text class="x-tick" x="${x(v)}" y="${axisY + 14}" text-anchor="middle">${v}</text>`);
  /** Legend entry `i`: a swatch drawn by `swatch(x, y)` and the name, below the x axis label. */
  const legend = (i: number, name: string, swatch: (lx: number, ly: number) => string) => {
    const ly = PLOT_H + 4 + i * LEGEND_LINE;
    parts.push(
      swatch(PAD.left, ly),
      `<text class="legend" x="${PAD.left + 24}" y="${ly + 4}">${esc(name)}</text>`,
    );
  };
  return { x, y, parts, legend };
}

export function lineChart(o: {
  title: string;
  xLabel: string;
  series: Series[];
  yMin?: number;
  yMax?: number;
}): string {
  const all = o.series.flatMap((s) => s.points);
  const ys = all.map((p) => p[1]).filter(Number.isFinite);
  const yMin = o.yMin ?? Math.min(0, ...ys);
  const yMax = o.yMax ?? Math.max(1e-9, ...ys);
  const xMin = Math.min(...all.map((p) => p[0]), 0);
  const xMax = Math.max(...all.map((p) => p[0]), 1);
  const { x, y, parts, legend } = frame({ ...o, legend: o.series.length }, yMin, yMax, xMin, xMax);
  o.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const dash = s.dashed ? ' stroke-dasharray="5,4"' : '';
    const pts = s.points.filter((p) => Number.isFinite(p[1]));
    if (pts.length > 1)
      parts.push(
        `<polyline fill="none" stroke="${color}" stroke-width="2"${dash} points="${pts.map((p) => `${x(p[0])},${y(p[1])}`).join(' ')}"/>`,
      );
    for (const p of pts) parts.push(`<circle cx="${x(p[0])}" cy="${y(p[1])}" r="3" fill="${color}"/>`);
    legend(
      i,
      s.name,
      (lx, ly) =>
        `<line x1="${lx}" y1="${ly}" x2="${lx + 18}" y2="${ly}" stroke="${color}" stroke-width="2"${dash}/>`,
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
  const { x, y, parts, legend } = frame({ ...o, legend: o.names.length }, 0, 1, xMin, xMax);
  const width = Math.max(2, (x(1) - x(0)) * 0.7);
  for (const b of o.bars) {
    let base = 0;
    b.shares.forEach((s, i) => {
      parts.push(
        `<rect x="${x(b.x) - width / 2}" y="${y(base + s)}" width="${width}" height="${y(base) - y(base + s)}" fill="${COLORS[i % COLORS.length]}"/>`,
      );
      base += s;
    });
  }
  o.names.forEach((n, i) => {
    legend(
      i,
      n,
      (lx, ly) =>
        `<rect x="${lx}" y="${ly - 6}" width="12" height="12" fill="${COLORS[i % COLORS.length]}"/>`,
    );
  });
  parts.push('</svg>');
  return parts.join('\n');
}
