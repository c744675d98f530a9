/**
 * `duel serve` from V8's code cache (dist/bin/duel-serve.js, what the images and local clusters
 * start): the cache `npm run build` wrote is accepted, a cache V8 rejects only costs the compile
 * (the service still serves, and nothing is written), and bad input exits as `duel serve` does.
 */
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { cpSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { duelServeBin, packageRoot } from '../../src/platform/paths.js';
import { healthCheck } from '../helpers/grpc.js';
import { tempDirs } from '../helpers/tmp.js';

const tmp = tempDirs('duel-launcher-');

/** Starts the launcher at `bin` for the scorer and resolves with its address and log once it listens. */
async function serveScorer(bin: string) {
  const child = spawn(process.execPath, [bin, 'scorer', '--port', '0'], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, DUEL_LOG_LEVEL: 'info' },
  });
  let log = '';
  const address = await new Promise<string>((resolve, reject) => {
    child.stderr.on('data', (d: Buffer) => {
      log += d.toString();
      const m = /listening on (\S+)/.exec(log);
      if (m && log.includes('"serving"')) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${log}`)));
  });
  expect(await healthCheck(address)).toBe('SERVING');
  child.kill('SIGTERM');
  const [code] = await once(child, 'exit');
  return { code, log };
}

describe('duel serve from the code cache', () => {
  it('starts from the cache the build wrote', async () => {
    const { code, log } = await serveScorer(duelServeBin());
    expect(code).toBe(0);
    expect(log).toMatch(/"codeCache":"accepted"/);
  });

  it('serves when V8 rejects the cache, and writes nothing', async () => {
    // A copy of the built package whose scorer cache is not V8's.
    const root = tmp();
    const repo = packageRoot();
    for (const dir of ['proto', 'node_modules']) symlinkSync(join(repo, dir), join(root, dir));
    cpSync(join(repo, 'package.json'), join(root, 'package.json'));
    mkdirSync(join(root, 'dist'));
    cpSync(join(repo, 'dist', 'bin'), join(root, 'dist', 'bin'), { recursive: true });
    const cache = join(root, 'dist', 'bin', 'serve.scorer.v8cache');
    writeFileSync(cache, 'not a code cache');
    const { code, log } = await serveScorer(join(root, 'dist', 'bin', 'duel-serve.js'));
    expect(code).toBe(0);
    expect(log).toMatch(/"codeCache":"rejected"/);
    expect(readFileSync(cache, 'utf8')).toBe('not a code cache');
  });

  it('refuses an unknown role as duel serve does', () => {
    const r = spawnSync(process.execPath, [duelServeBin(), 'oracle'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/unknown role 'oracle'/);
  });
});
