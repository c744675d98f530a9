/** `duel demo` end to end at toy sizes: models built, two rounds through the real suite, the report written. */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { renderInChromium } from '../helpers/browser.js';
import { fileTempDir } from '../helpers/tmp.js';
import { duel, TOY } from '../helpers/toy.js';

const root = fileTempDir('duel-demo-');

const demo = (args: string[]) => duel(['demo', ...args]);

describe('duel demo', () => {
  it('builds the testbed, runs rounds through the suite and writes summary.json and report.html', async () => {
    const out = join(root, 'run');
    const { code, stdout, stderr } = await demo(['--rounds', '2', '--seed', '3', '--out', out, ...TOY]);
    expect(code, stderr.slice(-3000)).toBe(0);
    const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8'));
    expect(summary.algo).toBe('inpo');
    // The perfect update's curve on the style sub-game, drawn beside the measured one.
    expect(summary.tabular.last).toHaveLength(3);
    expect(summary.mixture_last_half).toBeDefined();
    expect(summary.game).toMatchObject({ n_styles: 3, a: 6, b: 2 });
    expect(summary.rounds.map((r: { round: number }) => r.round)).toEqual([0, 1, 2]);
    for (const r of summary.rounds) {
      expect(Object.keys(r.oracle).sort()).toEqual(
        [
          'exploitability',
          'exploitability_floor',
          'exploitability_styles',
          'kl_to_ref',
          'length',
          'quality',
          'style_distribution',
          'style_entropy',
          'win_rate_vs_ref',
        ].sort(),
      );
      expect(r.oracle.style_distribution.reduce((a: number, b: number) => a + b, 0)).toBeCloseTo(1, 9);
    }
    // π_ref against its own samples (another seed) is an even match; its KL to itself is 0.
    expect(summary.rounds[0].oracle.win_rate_vs_ref).toBeGreaterThan(0.3);
    expect(summary.rounds[0].oracle.win_rate_vs_ref).toBeLessThan(0.7);
    expect(summary.rounds[0].oracle.kl_to_ref).toBeCloseTo(0, 6);
    // The style part never exceeds the whole (a full-quality sample only loses more often).
    for (const r of summary.rounds)
      expect(r.oracle.exploitability_styles).toBeLessThanOrEqual(r.oracle.exploitability + 1e-12);
    // The weight average of the last half (round 2 alone here) is round 2's model, graded the same.
    expect(summary.averaged_last_half).toMatchObject({ from: 2, to: 2 });
    expect(summary.averaged_last_half.oracle).toEqual(summary.rounds[2].oracle);
    expect(existsSync(join(out, 'averaged', 'model.safetensors'))).toBe(true);
    expect(stdout).toMatch(/weights avg 2–2/);
    expect(summary.rounds[1].judge.win_rate_vs_ref).toBeGreaterThan(0);
    expect(summary.rounds[1].train.steps).toBeGreaterThan(0);
    expect(summary.judge_fidelity.agreement).toBeGreaterThan(0);
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    expect((html.match(/<svg /g) ?? []).length).toBeGreaterThanOrEqual(4);
    // What a reader sees: the headline against the goals first, the charts, the table last;
    // no legend or label cut off, no page wider than the window.
    const seen = renderInChromium(html);
    expect(seen.clipped).toEqual([]);
    expect(seen.overlappingTicks).toEqual([]);
    expect(seen.overflowX).toBe(0);
    expect(seen.outline[0]).toMatch(/^duel demo: inpo/);
    expect(seen.outline[1]).toBe('table.goals');
    expect(seen.outline.indexOf('svg')).toBeGreaterThan(1);
    expect(seen.outline.at(-1)).toBe('table.rounds');
    expect(html).toMatch(/After 2 rounds of inpo .*oracle win rate vs π_ref <b>0\.\d{3}<\/b>/);
    expect(readFileSync(join(out, 'exploitability.svg'), 'utf8')).toMatch(
      /^<svg [\s\S]*Exploitability[\s\S]*<\/svg>/,
    );
    expect(summary.run_settings['run.reference_update_every']).toBe(3);
    expect(stdout).toMatch(/round\s+win rate vs π_ref\s+exploitability/);
    expect(stderr).toMatch(/round 2\/2 completed/);
    expect(existsSync(join(out, 'logs', 'orchestrator.log'))).toBe(true);
    // nats-server is installed here (CI installs it), so the demo runs on a server of its own.
    expect(summary.bus).toBe('nats');
    expect(stderr).toMatch(/started nats-server \(nats:\/\/127\.0\.0\.1:\d+\)/);
  }, 240_000);

  it('runs on the in-process bus and in float16 when asked, and says so in its log and report', async () => {
    const out = join(root, 'memory');
    const args = ['--rounds', '1', '--bus', 'memory', '--dtype', 'float16', '--out', out, ...TOY];
    const { code, stderr } = await demo(args);
    expect(code, stderr.slice(-3000)).toBe(0);
    const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8'));
    expect(summary).toMatchObject({ bus: 'memory', dtype: 'float16' });
    // The trainer trained its round in mixed precision: it reports the loss scale it ended with
    // (test/services/trainer.test.ts: the next round starts there).
    const { loss_scale, overflow_steps } = summary.rounds[1].train;
    expect(loss_scale).toBe(65536 / 2 ** overflow_steps);
    expect(stderr).toMatch(/in-process bus/);
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    expect(html).toMatch(/<th>bus<\/th><td>the orchestrator's in-process bus/);
    expect(html).toMatch(
      /<th>computed in<\/th><td>float16 \(training: float32 master weights, loss scaled\)/,
    );
    expect((await demo(['--bus', 'carrier-pigeon', '--out', join(root, 'x')])).stderr).toMatch(
      /--bus: must be auto, nats or memory, got 'carrier-pigeon'/,
    );
  }, 240_000);

  it('refuses an unknown run setting and a bad game key before building anything', async () => {
    const a = await demo(['--out', join(root, 'bad1'), '--set', 'run.speed=3']);
    expect(a.code).not.toBe(0);
    expect(a.stderr).toMatch(/run\.speed/);
    const b = await demo(['--out', join(root, 'bad2'), '--set', 'game.n_styles=2']);
    expect(b.code).not.toBe(0);
    expect(b.stderr).toMatch(/game\.n_styles/);
    expect(existsSync(join(root, 'bad1', 'models'))).toBe(false);
    // A schedule whose second round breaks INPO's η·τ < 1 is refused with the round named.
    const c = await demo(['--out', join(root, 'bad3'), '--set', 'eta=4,8', '--set', 'tau=0.2']);
    expect(c.code).not.toBe(0);
    expect(c.stderr).toMatch(/--set\.tau \(round 2\): inpo: eta·tau must be below 1/);
    expect(existsSync(join(root, 'bad3', 'models'))).toBe(false);
  });
});
