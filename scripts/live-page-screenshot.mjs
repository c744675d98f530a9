#!/usr/bin/env node
/**
 * docs/live-run-page.png: the live run page of a `duel demo` run, taken mid-run by headless
 * Chromium (Debian's, through puppeteer-core, as test/e2e/live-page.test.ts drives it).
 *
 *   npm run build && node scripts/live-page-screenshot.mjs [--rounds 16] [--at 12] [--out docs/live-run-page.png]
 *
 * The demo prints its run's page address when it submits the run; the page is opened then, and
 * the screenshot taken once it shows `--at` completed rounds. The demo then runs to its end.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import puppeteer from 'puppeteer-core';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '16' },
    at: { type: 'string', default: '12' },
    out: { type: 'string', default: 'docs/live-run-page.png' },
    'demo-out': { type: 'string' },
  },
});
const at = Number(values.at);
const demoOut = values['demo-out'] ?? mkdtempSync(join(tmpdir(), 'duel-live-demo-'));
const demo = spawn(
  process.execPath,
  ['dist/bin/main.js', 'demo', '--rounds', values.rounds, '--out', demoOut],
  {
    stdio: ['ignore', 'inherit', 'pipe'],
  },
);
const page = await new Promise((done, fail) => {
  let tail = '';
  demo.stderr.on('data', (chunk) => {
    process.stderr.write(chunk);
    tail = (tail + chunk.toString()).slice(-4000);
    const m = /live page (http\S+)/.exec(tail);
    if (m) done(m[1]);
  });
  demo.once('exit', (code) => fail(new Error(`duel demo exited (${code}) before naming its page`)));
});
const browser = await puppeteer.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu'],
});
try {
  const tab = await browser.newPage();
  await tab.setViewport({ width: 1280, height: 900 });
  await tab.goto(page, { waitUntil: 'domcontentloaded' });
  await tab.waitForFunction(`Number(document.querySelector('#run')?.dataset.roundsCompleted) >= ${at}`, {
    timeout: 30 * 60_000,
  });
  await tab.screenshot({ path: resolve(values.out), fullPage: true });
  process.stderr.write(`live-page-screenshot: wrote ${values.out} (${page} after round ${at})\n`);
} finally {
  await browser.close();
}
await new Promise((done) => demo.once('exit', done));
