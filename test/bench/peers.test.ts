/**
 * The benches with a peer, run as users run them: `duel bench …` from the built command
 * (dist/bin/main.js, the bundle), at their smallest sizes. Each must print its peer's figure: the
 * peers run in their own process from a script the bench has to find, and once the CLI was bundled
 * they were looked for beside the bundle and were not there.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { duelBin } from '../../src/platform/paths.js';

const duel = async (...args: string[]) => {
  const { stdout } = await promisify(execFile)(process.execPath, [duelBin(), 'bench', ...args, '--json'], {
    maxBuffer: 1 << 24,
  });
  return JSON.parse(stdout.trim().split('\n').at(-1)!);
};

describe('benches with peers, from the built command', () => {
  it('bench engine measures TensorFlow.js on the same stack', async () => {
    const r = await duel('engine', '--steps', '1', '--ceiling-size', '64');
    expect(r.tfjs.step_ms).toBeGreaterThan(0);
    expect(r.tfjs_speedup).toBeGreaterThan(0);
  }, 300_000);

  it('bench decode measures transformers.js on the same model', async () => {
    const r = await duel(
      'decode',
      '--models',
      'testbed',
      '--batches',
      '1',
      '--new-tokens',
      '4',
      '--repeats',
      '1',
    );
    const row = JSON.stringify(r);
    expect(row).toMatch(/"transformersjs_tokens_per_s":\d/);
  }, 300_000);

  it('bench snapshots measures the steps with no snapshot, in the background and inline (the peer)', async () => {
    const r = await duel('snapshots', '--model', 'testbed', '--steps', '10', '--batch', '2', '--tokens', '8');
    expect(r.variants.map((v: { variant: string }) => v.variant)).toEqual(['none', 'background', 'inline']);
    for (const v of r.variants) expect(v.p95_ms).toBeGreaterThan(0);
  }, 300_000);

  it("bench session-probe --round-only trains a LoRA run's round alone and says what its peak adds", async () => {
    const r = await duel('session-probe', '--round-only', '--model', 'testbed');
    expect(r.lora_round.base_mb).toBeGreaterThan(0);
    expect(r.lora_round.peak_added_mb).toBeGreaterThan(0);
    expect(r.lora_round.peak_added_vs_base).toBeCloseTo(r.lora_round.peak_added_mb / r.lora_round.base_mb, 6);
  }, 300_000);

  it('bench largest trains a size in a child process, and stops one when memory runs short', async () => {
    const small = ['--batch', '1', '--seq', '8'];
    const r = await duel(
      'largest',
      ...small,
      '--models',
      'smollm-135m',
      '--modes',
      'lora',
      '--gradient-checkpointing',
    );
    expect(r.gradient_checkpointing).toBe(true);
    expect(r.largest_lora).toBe('smollm-135m');
    expect(r.sizes[0]).toMatchObject({ mode: 'lora', fits: true });
    expect(r.sizes[0].params).toBeGreaterThan(130e6);
    expect(r.sizes[0].peak_rss_mb).toBeGreaterThan(500);
    // The two phases' peaks, read apart (VmHWM restarted between them); the peak is the larger.
    const { peak_forward_backward_mb: fb, peak_optim_step_mb: os } = r.sizes[0];
    expect(Math.min(fb, os)).toBeGreaterThan(500);
    expect(r.sizes[0].peak_rss_mb).toBe(Math.max(fb, os));
    // A reserve no machine has: the watchdog stops the child at once, and the mode ends there.
    const none = await duel(
      'largest',
      ...small,
      '--models',
      'smollm-135m,smollm-360m',
      '--modes',
      'full',
      '--reserve',
      '100000000',
    );
    expect(none.gradient_checkpointing).toBe(false);
    expect(none.largest_full).toBeUndefined();
    expect(none.sizes).toEqual([expect.objectContaining({ model: 'smollm-135m', fits: false })]);
  }, 300_000);
});
