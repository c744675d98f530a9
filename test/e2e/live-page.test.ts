/**
 * The live run page in headless Chromium (Debian's, driven by puppeteer-core) while a real run
 * goes through the suite (nats-server, a sampler, a scorer, the trainer, the orchestrator as
 * processes): the built `duel runs list` names the page, the page opened before the first round
 * shows each round within seconds of the round's completed event, and once the run ends nothing
 * on it is clipped. DUEL_LIVE_PAGE_ROUNDS makes the run longer; DUEL_LIVE_PAGE_SCREENSHOT=<png>
 * keeps the page's screenshot (docs/live-run-page.png is one).
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import puppeteer, { type Browser } from 'puppeteer-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '../../src/client/local-cluster.js';
import { followRun, runsClient, submitRun } from '../../src/client/runs.js';
import { EventKind } from '../../src/gen/duel/v1/events.js';
import { RunState } from '../../src/gen/duel/v1/runs.js';
import { duelBin } from '../../src/platform/paths.js';
import { readRunSpec } from '../../src/platform/run-spec.js';
import { CHROMIUM, MEASURE_JS, type Rendered } from '../helpers/browser.js';
import { writeTinyRun, writeTinySpec } from '../helpers/tiny-run.js';

const ROUNDS = Number(process.env.DUEL_LIVE_PAGE_ROUNDS ?? 2);
/** "Within a few seconds" of the completed event: what a person watching the page would accept. */
const WITHIN_MS = 3_000;

let root: string;
let cluster: LocalCluster;
let browser: Browser;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'duel-live-page-'));
  writeTinyRun(root);
  cluster = await LocalCluster.start({ artifactsRoot: join(root, 'artifacts'), logDir: join(root, 'logs') });
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
    headless: true,
  });
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await cluster?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('the live run page', () => {
  it('shows each round within seconds of its completed event, and nothing clipped', async () => {
    const spec = readRunSpec(
      writeTinySpec(root, 'live', {
        rounds: ROUNDS,
        goals: { win_rate_vs_ref: '>= 0.5', loss_mean: '< 100' },
      }),
    );
    const created = await submitRun(cluster.orchestrator.address, spec, {
      id: 'live',
      detach: true,
      log: () => {},
    });
    expect(created.pageUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/runs\/live$/);

    // The built command names the same page.
    const listed = execFileSync(
      process.execPath,
      [duelBin(), 'runs', 'list', '--server', cluster.orchestrator.address],
      { encoding: 'utf8' },
    )
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { run_id: string; page?: string });
    expect(listed.find((r) => r.run_id === 'live')?.page).toBe(created.pageUrl);

    const page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 900 });
    // When the page's count of completed rounds changes, by the wall clock this test reads too.
    // (Browser code goes as strings: this project compiles against Node's types, not the DOM's.)
    await page.evaluateOnNewDocument(`
      window.shown = {};
      new MutationObserver(() => {
        const n = Number(document.querySelector('#run')?.dataset.roundsCompleted ?? 0);
        window.shown[n] ??= Date.now();
      }).observe(document, { subtree: true, childList: true });
    `);
    await page.goto(created.pageUrl, { waitUntil: 'domcontentloaded' });

    const completedAt: Record<number, number> = {};
    const client = runsClient(cluster.orchestrator.address);
    const run = await followRun(client, 'live', true, (e) => {
      if (e.kind === EventKind.EVENT_KIND_ROUND_COMPLETED) completedAt[e.round] = Date.now();
    }).finally(() => client.close());
    expect(run.state).toBe(RunState.RUN_STATE_SUCCEEDED);
    await page.waitForFunction(`document.querySelector('#run')?.dataset.state === 'succeeded'`, {
      timeout: 10_000,
    });

    const shown = (await page.evaluate('window.shown')) as Record<number, number>;
    for (let n = 1; n <= ROUNDS; n++) {
      expect(shown[n], `round ${n} never shown`).toBeDefined();
      // Shown after the event reached this test (it may be a little before: the page and the
      // test follow the same stream independently), and within seconds of it.
      expect(shown[n]! - completedAt[n]!, `round ${n}`).toBeLessThan(WITHIN_MS);
    }

    const text = (await page.evaluate('document.body.innerText')) as string;
    expect(text).toContain('succeeded');
    expect(text).toContain(`${ROUNDS} of ${ROUNDS} rounds completed`);
    expect(await page.$$eval('table.rounds tr[data-round]', (rows) => rows.length)).toBe(ROUNDS);
    // Each goal judged on the last round's figure, as the record has it.
    const last = run.rounds.at(-1)!.metrics!.values;
    const goals = await page.$$eval('table.goals tr', (rows) =>
      rows.slice(1).map((r) => r.textContent ?? ''),
    );
    expect(goals).toEqual([
      expect.stringMatching(
        `win_rate_vs_ref >= 0.5${last.win_rate_vs_ref!.toFixed(3)}.*${last.win_rate_vs_ref! >= 0.5 ? 'met' : 'missed'}`,
      ),
      expect.stringMatching(`loss_mean < 100${last.loss_mean!.toFixed(3)}.*met`),
    ]);

    const rendered = (await page.evaluate(MEASURE_JS)) as Rendered;
    expect(rendered.clipped).toEqual([]);
    expect(rendered.overlappingTicks).toEqual([]);
    expect(rendered.overflowX).toBe(0);
    expect(rendered.outline.filter((x) => x === 'svg').length).toBeGreaterThanOrEqual(3);

    const shot = join(root, 'live-run-page.png');
    await page.screenshot({ path: shot as `${string}.png`, fullPage: true });
    expect(existsSync(shot)).toBe(true);
    if (process.env.DUEL_LIVE_PAGE_SCREENSHOT)
      copyFileSync(shot, resolve(process.env.DUEL_LIVE_PAGE_SCREENSHOT));
    await page.close();
  }, 300_000);

  it('lists the runs, and answers an unknown or malformed run with 404 and 400', async () => {
    const base = new URL(
      (
        await submitRun(
          cluster.orchestrator.address,
          readRunSpec(writeTinySpec(root, 'listed', { rounds: 1 })),
          {
            id: 'listed',
            detach: true,
            log: () => {},
          },
        )
      ).pageUrl,
    ).origin;
    const index = await fetch(`${base}/runs`);
    expect(index.status).toBe(200);
    expect(await index.text()).toContain('href="runs/listed"');
    const missing = await fetch(`${base}/runs/nobody`);
    expect(missing.status).toBe(404);
    expect(await missing.text()).toContain("no run 'nobody'");
    const bad = await fetch(`${base}/runs/Not_A_Run`);
    expect(bad.status).toBe(400);
    expect((await fetch(`${base}/runs/listed`, { method: 'POST' })).status).toBe(405);
    expect((await fetch(`${base}/metrics`)).status).toBe(200);
    // A finished run's stream replays it and ends, so a browser opened later gets the whole run.
    const client = runsClient(cluster.orchestrator.address);
    await followRun(client, 'listed', true, () => {}).finally(() => client.close());
    const stream = await (await fetch(`${base}/runs/listed/events`)).text();
    expect(stream).toMatch(
      /event: report\ndata: <section id="run" data-state="succeeded" data-rounds-completed="1">/,
    );
    expect(stream.trimEnd().endsWith('event: end\ndata: succeeded')).toBe(true);
  }, 120_000);
});
