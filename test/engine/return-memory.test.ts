/**
 * Low-memory sessions hand freed heap pages back after their runs (glibc's malloc_trim through
 * koffi). What it saves is a benchmark's figure (`bench session-probe`, BENCHMARKS.md); here: the
 * call is reachable on this Linux from the built worker's dependencies, and DUEL_MALLOC_TRIM=0
 * turns it off.
 */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

const probe = (env: NodeJS.ProcessEnv) =>
  execFileSync(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      "const m = await import('./dist/src/engine/runtime/return-memory.js'); console.log(JSON.stringify(m.returnFreedMemory()));",
    ],
    { encoding: 'utf8', env: { ...process.env, ...env } },
  ).trim();

describe('returning freed memory', () => {
  it('trims here, and not when turned off', () => {
    expect(probe({})).toBe('true');
    expect(probe({ DUEL_MALLOC_TRIM: '0' })).toBe('false');
  });
});
