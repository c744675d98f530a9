/**
 * examples/python as a user runs it: stubs generated from proto/ by protoc, a Python GRPO-style
 * loop (grpcio) against `duel serve trainer` — Sample, importance_sampling, OptimStep — whose mean
 * reward must rise.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

describe('examples/python', () => {
  it('trains a policy toward a rule-based reward through the TrainingService from Python', () => {
    const run = spawnSync('bash', [join('examples', 'python', 'run.sh'), '--steps', '8'], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    expect(run.status, `${run.stdout}\n${run.stderr}`).toBe(0);
    expect(run.stdout).toMatch(/step {2}8\/8 {2}mean reward/);
    const [, first, last] = /mean reward ([\d.]+) -> ([\d.]+)/.exec(run.stdout)!;
    expect(Number(last)).toBeGreaterThan(Number(first));
  });
});
