/**
 * Renders an HTML page in headless Chromium (Debian's package, which scripts/setup.sh installs)
 * and reports what a reader would see wrong: SVG text cut off by its chart's edge, x-axis labels
 * running into each other, a page wider than the window, and the order of the page's parts. A
 * script appended to a copy of the page measures the laid-out boxes; `--dump-dom` returns them.
 * A live page (served, updating) is driven through puppeteer-core instead, with the same
 * measurement (MEASURE_JS).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

export const CHROMIUM = '/usr/bin/chromium';

export interface Rendered {
  /** Texts whose box leaves their SVG's view box: "chart title: text". */
  clipped: string[];
  /** Neighbouring x-axis labels whose boxes overlap: "chart title: a | b". */
  overlappingTicks: string[];
  /** The page's width beyond the window's, in CSS pixels (0: nothing runs off the page). */
  overflowX: number;
  /** The page's top-level headings and tables and charts, in document order (h1/h2 text, "svg", "table.<class>"). */
  outline: string[];
}

/** An expression that measures the laid-out page in the browser and evaluates to a Rendered. */
export const MEASURE_JS = `(() => {
  const title = (svg) => svg.querySelector('title')?.textContent ?? '(untitled)';
  const clipped = [], overlappingTicks = [];
  for (const svg of document.querySelectorAll('svg')) {
    const vb = svg.viewBox.baseVal;
    for (const t of svg.querySelectorAll('text')) {
      const b = t.getBBox();
      if (b.x < -0.5 || b.y < -0.5 || b.x + b.width > vb.width + 0.5 || b.y + b.height > vb.height + 0.5)
        clipped.push(title(svg) + ': ' + t.textContent);
    }
    const ticks = [...svg.querySelectorAll('text.x-tick')].map((t) => ({ t: t.textContent, b: t.getBBox() }));
    for (let i = 1; i < ticks.length; i++)
      if (ticks[i].b.x < ticks[i - 1].b.x + ticks[i - 1].b.width + 2)
        overlappingTicks.push(title(svg) + ': ' + ticks[i - 1].t + ' | ' + ticks[i].t);
  }
  const outline = [...document.body.querySelectorAll('h1, h2, svg, table')]
    .filter((e) => !e.parentElement.closest('svg'))
    .map((e) => (e.tagName === 'TABLE' ? 'table.' + e.className : e.tagName === 'svg' ? 'svg' : e.textContent));
  const overflowX = Math.max(0, document.documentElement.scrollWidth - window.innerWidth);
  return { clipped, overlappingTicks, overflowX, outline };
})()`;

const MEASURE = `<script>
const pre = document.createElement('pre');
pre.id = 'render-check';
pre.textContent = JSON.stringify(${MEASURE_JS});
document.body.appendChild(pre);
</script>`;

export function renderInChromium(html: string, width = 1280): Rendered {
  if (!existsSync(CHROMIUM))
    throw new Error(`${CHROMIUM} not found: install Debian's chromium (bash scripts/setup.sh does)`);
  const dir = mkdtempSync(join(tmpdir(), 'duel-render-'));
  try {
    const page = join(dir, 'page.html');
    writeFileSync(page, html.replace('</body>', `${MEASURE}</body>`));
    const dom = execFileSync(
      CHROMIUM,
      [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        `--user-data-dir=${join(dir, 'profile')}`,
        `--window-size=${width},900`,
        '--dump-dom',
        pathToFileURL(page).href,
      ],
      { encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'ignore'] },
    );
    const m = /<pre id="render-check">([^<]*)<\/pre>/.exec(dom);
    if (!m) throw new Error(`chromium returned no measurements: ${dom.slice(0, 300)}`);
    return JSON.parse(
      m[1]!
        .replace(/&quot;/g, '"')
        .replace(/&lt;/g, '<')
        .replace(/&gt;/g, '>')
        .replace(/&amp;/g, '&'),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export const readHtml = (path: string) => readFileSync(path, 'utf8');
