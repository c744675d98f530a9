/**
 * bench/gpu.sh, the script a session with a lent GPU runs in one device call, run end to end at
 * the sizes of --small on this machine's adapter (lavapipe in CI): every part ends and writes its
 * result, so the one call a GPU session gets is not spent finding a broken script.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
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
  // Everything comes back as one archive (a device call returns 8 files at most).
  const results = join(out, 'results');
  mkdirSync(results);
  expect(spawnSync('tar', ['-xzf', join(out, 'gpu-results.tgz'), '-C', results]).status).toBe(0);
  expect(readFileSync(join(results, 'doctor.txt'), 'utf8')).toMatch(/selected\s+webgpu/);
  const json = (part: string) => JSON.parse(readFileSync(join(results, `${part}.json`), 'utf8'));
  const engine = json('engine');
  expect(engine.provider).toBe('webgpu');
  expect(engine.adapter.vendor).toBeTruthy();
  // lavapipe has shader-f16: the half-precision ceiling is measured beside the float32 one.
  expect(engine.ceiling_gflops_float16).toBeGreaterThan(0);
  expect(readFileSync(join(results, 'doctor.txt'), 'utf8')).toMatch(
    /shader-f16\s+true with ONNX Runtime's adapter toggles/,
  );
  expect(engine.cpu_step_ms).toBeGreaterThan(0);
  expect(engine.device_state.last).toEqual(engine.device_state.first);
  expect(engine.dispatch.node_us).toBeGreaterThan(0);
  // Both update layouts timed in the same run: the flat one (a GPU's default) has fewer nodes.
  expect(engine.update_layout).toBe('flat');
  expect(engine.layouts.flat.nodes).toBeLessThan(engine.layouts['per-tensor'].nodes);
  expect(engine.layouts['per-tensor'].step_ms).toBeGreaterThan(0);
  expect(json('engine-novalidation').dispatch.run_us).toBeGreaterThan(0);
  expect(json('decode-novalidation').rows).toHaveLength(2);
  const decode = json('decode');
  expect(decode.rows.map((row: { batch: number }) => row.batch)).toEqual([1, 8]);
  for (const row of decode.rows) expect(row.moved_per_token.toDevice).toBeGreaterThan(0);
  const judges = json('judge');
  expect(judges.rows.map((row: { judge: string; dtype: string }) => [row.judge, row.dtype])).toEqual([
    ['pairrm', 'float32'],
    ['reward', 'float32'],
  ]);
  expect(json('judge-float16').rows).toEqual([
    expect.objectContaining({ judge: 'pairrm', dtype: 'float16' }),
    expect.objectContaining({ judge: 'reward', dtype: 'float16' }),
  ]);
  const oneRun = json('decode-one-run');
  expect(oneRun).toMatchObject({ provider: 'webgpu', one_run: true });
  expect(decode.one_run).toBe(false);
  for (const row of oneRun.rows) expect(row.duel_tokens_per_s).toBeGreaterThan(0);
  const half = json('decode-float16');
  expect(half).toMatchObject({ provider: 'webgpu', dtype: 'float16' });
  for (const row of half.rows) expect(row.duel_tokens_per_s).toBeGreaterThan(0);
  expect(json('placement').graphs).toHaveLength(4);
  // The round: a timing line, then the trainer's metrics.
  const round = (part: string) => {
    const [timing, ...metrics] = readFileSync(join(results, `${part}.json`), 'utf8').split('\n');
    expect(JSON.parse(timing!).wall_ms).toBeGreaterThan(0);
    return JSON.parse(metrics.join('\n'));
  };
  const [onGpu, onCpu, folded] = [round('round'), round('round-cpu'), round('round-folded')];
  expect(onGpu).toMatchObject({ algo: 'sppo', steps: 8, skipped_steps: 0 });
  // The same round on the cpu provider, and folded into two runs: the losses agree.
  expect(Math.abs(onGpu.loss_mean - onCpu.loss_mean) / onCpu.loss_mean).toBeLessThan(1e-3);
  expect(Math.abs(folded.loss_mean - onGpu.loss_mean) / onGpu.loss_mean).toBeLessThan(1e-3);
  // What the GPU's steps moved is reported; on cpu nothing moves.
  expect(onGpu.moved_mb_per_step).toBeGreaterThan(0);
  expect(onCpu.moved_mb_per_step).toBeUndefined();
}, 300_000);
