/**
 * bench/gpu.sh, the script a session with a lent GPU runs in one device call, run end to end at
 * the sizes of --small on this machine's adapter (lavapipe in CI): every part ends and writes its
 * result, so the one call a GPU session gets is not spent finding a broken script.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { fileTempDir } from '../helpers/tmp.js';

const out = fileTempDir('duel-gpu-sh-');

it('runs every part on the webgpu provider and writes its result', () => {
  const r = spawnSync('bash', ['bench/gpu.sh', '--small'], {
    encoding: 'utf8',
    env: { ...process.env, OUT: out },
    timeout: 240_000,
  });
  expect(r.status, r.stdout + r.stderr).toBe(0);
  expect(r.stdout).not.toMatch(/FAILED/);
  expect(readFileSync(join(out, 'doctor.txt'), 'utf8')).toMatch(/selected\s+webgpu/);
  const json = (part: string) => JSON.parse(readFileSync(join(out, `${part}.json`), 'utf8'));
  const engine = json('engine');
  expect(engine.provider).toBe('webgpu');
  expect(engine.adapter.vendor).toBeTruthy();
  expect(engine.cpu_step_ms).toBeGreaterThan(0);
  expect(engine.device_state.last).toEqual(engine.device_state.first);
  const decode = json('decode');
  expect(decode.rows.map((row: { batch: number }) => row.batch)).toEqual([1, 8]);
  for (const row of decode.rows) expect(row.moved_per_token.toDevice).toBeGreaterThan(0);
  expect(json('placement').graphs).toHaveLength(4);
  // The round: a timing line, then the trainer's metrics.
  const [timing, ...metrics] = readFileSync(join(out, 'round.json'), 'utf8').split('\n');
  expect(JSON.parse(timing!).wall_ms).toBeGreaterThan(0);
  expect(JSON.parse(metrics.join('\n'))).toMatchObject({ algo: 'sppo', steps: 8, skipped_steps: 0 });
}, 300_000);
