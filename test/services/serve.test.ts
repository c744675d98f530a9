/** `duel serve` as a real process: binds loopback, reports SERVING, rejects bad input, drains on SIGTERM. */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import {
  type CompareRequest,
  type CompareResponse,
  PreferenceScorerServiceClient,
  ProbMode,
} from '../../src/gen/duel/v1/scorer.js';
import { initJudgeWeights } from '../../src/models/judge/model.js';
import { saveJudgeDir } from '../../src/models/judge/runner.js';
import { FileArtifactStore } from '../../src/platform/artifacts.js';
import { freePort } from '../../src/platform/nats-server.js';
import { duelBin } from '../../src/platform/paths.js';
import { healthCheck, unary } from '../helpers/grpc.js';
import { tinyJudgeConfig } from '../helpers/model-fixtures.js';

const BIN = duelBin();

describe('duel serve', () => {
  it('serves the scorer until SIGTERM, answering bad requests with INVALID_ARGUMENT', async () => {
    const metricsPort = await freePort();
    const child = spawn(process.execPath, [BIN, 'serve', 'scorer', '--port', '0'], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, DUEL_LOG_LEVEL: 'warn', DUEL_METRICS_PORT: String(metricsPort) },
    });
    let stderr = '';
    const address = await new Promise<string>((resolve, reject) => {
      child.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
        const m = /listening on (\S+)/.exec(stderr);
        if (m) resolve(m[1]!);
      });
      child.once('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)));
    });
    expect(address).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(await healthCheck(address)).toBe('SERVING');

    const client = new PreferenceScorerServiceClient(address, grpc.credentials.createInsecure());
    const err = await unary<CompareRequest, CompareResponse>(client.compare.bind(client), {
      judge: undefined,
      items: [],
      probMode: ProbMode.PROB_MODE_PAIRWISE,
    }).catch((e: grpc.ServiceError) => e);
    expect((err as grpc.ServiceError).code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(await healthCheck(address)).toBe('SERVING');
    client.close();

    // Prometheus text on the metrics port: the rejected call, counted by method and code.
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    expect(text).toMatch(
      /duel_grpc_server_handled_total\{method="\/duel\.v1\.PreferenceScorerService\/Compare",code="INVALID_ARGUMENT",service="scorer"\} 1/,
    );
    expect(text).toContain('duel_grpc_server_handling_seconds_bucket');

    child.kill('SIGTERM');
    const [code] = await once(child, 'exit');
    expect(code).toBe(0);
  });

  it('refuses an unknown role and a bad setting before binding', async () => {
    const run = (args: string[], env: NodeJS.ProcessEnv = {}) =>
      new Promise<{ code: number; stderr: string }>((resolve) => {
        const c = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env } });
        let stderr = '';
        c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        c.on('exit', (code) => resolve({ code: code ?? -1, stderr }));
      });
    expect(await run(['serve', 'oracle'])).toMatchObject({
      code: 2,
      stderr: expect.stringContaining("unknown role 'oracle'"),
    });
    expect(await run(['serve', 'sampler'], { DUEL_PORT: '70000' })).toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/port: .*\(from DUEL_PORT\)/),
    });
    expect(await run(['serve', 'sampler'], { DUEL_RUNTIME_DTYPE: 'bfloat16' })).toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/runtime\.dtype: .*float32.*float16.*\(from DUEL_RUNTIME_DTYPE\)/),
    });
  });

  it('preloads configured judges before reporting SERVING, and exits naming a bad digest', async () => {
    const root = mkdtempSync(join(tmpdir(), 'duel-serve-'));
    try {
      const cfg = tinyJudgeConfig();
      saveJudgeDir(join(root, 'j'), cfg, initJudgeWeights(cfg, 1));
      const ref = new FileArtifactStore(join(root, 'store')).put(join(root, 'j'), 'judge');
      const start = (preload: string) =>
        spawn(process.execPath, [BIN, 'serve', 'scorer', '--port', '0'], {
          stdio: ['ignore', 'ignore', 'pipe'],
          env: { ...process.env, DUEL_LOG_LEVEL: 'info', DUEL_MODELS_PRELOAD: preload },
        });
      const good = start(`${ref.uri}#${ref.sha256}`);
      let log = '';
      const address = await new Promise<string>((resolve, reject) => {
        good.stderr.on('data', (d: Buffer) => {
          log += d.toString();
          const m = /listening on (\S+)/.exec(log);
          if (m && log.includes('preloaded')) resolve(m[1]!);
        });
        good.once('exit', (code) => reject(new Error(`exited ${code}: ${log}`)));
      });
      expect(await healthCheck(address)).toBe('SERVING');
      good.kill('SIGTERM');
      await once(good, 'exit');

      const bad = start(`${ref.uri}#${'0'.repeat(64)}`);
      let err = '';
      bad.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const [code, signal] = await once(bad, 'exit');
      // Stderr in the message: a flake seen once under a loaded full suite did not say why.
      expect({ code, signal }, err).toEqual({ code: 2, signal: null });
      expect(err).toMatch(/manifest digest .* does not match/);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
