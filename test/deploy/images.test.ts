/**
 * The images as Kubernetes runs them, on Docker: nats-server and the four services as containers
 * of `duel:<version>` (scripts/images.sh builds it), each as the manifests run it — its own
 * entrypoint, uid 10001, a read-only root filesystem with writable volumes only for /tmp and the
 * artifact cache, gRPC health SERVING — and a 2-round run driven from `duel run` on the host. A
 * sampler stopped with SIGTERM mid-run drains (its call in flight finishes, it exits 0), is started
 * again, and the run completes.
 *
 * Needs a Docker engine and the built image: CI runs it after scripts/images.sh with
 * DUEL_IMAGE_TESTS=1 (.ci/run); elsewhere it is skipped, saying so.
 */
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { followRun, runsClient } from '../../src/client/runs.js';
import { EventKind } from '../../src/gen/duel/v1/events.js';
import { RunState } from '../../src/gen/duel/v1/runs.js';
import {
  HealthCheckResponse_ServingStatus,
  HealthClient,
} from '../../src/gen/third_party/grpc/health/v1/health.js';
import { callUnary } from '../../src/platform/grpc/client.js';
import { findNatsServer, freePort } from '../../src/platform/nats-server.js';
import { writeTinyRun, writeTinySpec } from '../helpers/tiny-run.js';
import { fileTempDir } from '../helpers/tmp.js';

const enabled = process.env.DUEL_IMAGE_TESTS === '1';
const VERSION = JSON.parse(
  execFileSync(process.execPath, ['-p', 'JSON.stringify(require("./package.json").version)'], {
    encoding: 'utf8',
  }),
) as string;
const IMAGE = `duel:${VERSION}`;
const ROLES = ['sampler', 'scorer', 'trainer', 'orchestrator'] as const;
const root = fileTempDir('duel-images-');
const ports: Record<string, number> = {};
const docker = (...args: string[]) =>
  execFileSync('docker', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
const name = (role: string) => `duel-test-${role}`;

/** A service container as a pod runs it: the image's entrypoint, its user, a read-only root. */
function runService(role: (typeof ROLES)[number]): void {
  const env: Record<string, string> = {
    DUEL_HOST: '127.0.0.1',
    DUEL_PORT: String(ports[role]),
    DUEL_NATS_URL: `nats://127.0.0.1:${ports.nats}`,
    DUEL_ARTIFACTS_STORE: 'nats',
    DUEL_ARTIFACTS_ROOT: '/var/lib/duel/artifacts',
    DUEL_GRPC_SHUTDOWN_GRACE_MS: '20000',
    ...(role === 'orchestrator'
      ? {
          DUEL_ORCHESTRATOR_SAMPLERS: `127.0.0.1:${ports.sampler}`,
          DUEL_ORCHESTRATOR_SCORERS: `127.0.0.1:${ports.scorer}`,
          DUEL_ORCHESTRATOR_TRAINER: `127.0.0.1:${ports.trainer}`,
          DUEL_ORCHESTRATOR_MAX_WAIT_MS: '120000',
          DUEL_ORCHESTRATOR_PROMPTS_PER_CALL: '2',
        }
      : {}),
  };
  docker(
    'run',
    '-d',
    '--name',
    name(role),
    '--network',
    'host',
    '--read-only',
    '--tmpfs',
    '/tmp',
    // An anonymous volume starts with the image's directory, owned by the image's user.
    '--mount',
    'type=volume,dst=/var/lib/duel/artifacts',
    // The run's models and prompts, where the spec's file:// references point.
    '-v',
    `${root}:${root}:ro`,
    ...Object.entries(env).flatMap(([k, v]) => ['-e', `${k}=${v}`]),
    IMAGE,
    role,
  );
}

async function serving(address: string, timeoutMs = 120_000): Promise<void> {
  const client = new HealthClient(address, grpc.credentials.createInsecure());
  try {
    for (const until = Date.now() + timeoutMs; ; await new Promise((r) => setTimeout(r, 250))) {
      const status = await callUnary(client, client.check, { service: '' }, { deadlineMs: 2000 }, 'Check')
        .then((r) => (r as { status: number }).status)
        .catch(() => -1);
      if (status === HealthCheckResponse_ServingStatus.SERVING) return;
      if (Date.now() > until) throw new Error(`${address} not SERVING after ${timeoutMs} ms`);
    }
  } finally {
    client.close();
  }
}

const remove = () => {
  for (const role of [...ROLES, 'nats']) {
    try {
      docker('rm', '-f', '-v', name(role));
    } catch {}
  }
};

describe.skipIf(!enabled)(`the images (${IMAGE}) as containers`, () => {
  beforeAll(async () => {
    remove();
    for (const role of [...ROLES, 'nats']) ports[role] = await freePort();
    writeTinyRun(root);
    // The containers' user (uid 10001) reads the run's files: a temporary directory is 0700.
    chmodSync(root, 0o755);
    // nats-server is one static binary: Debian's, run in a container of the same image.
    docker(
      'run',
      '-d',
      '--name',
      name('nats'),
      '--network',
      'host',
      '--read-only',
      '--tmpfs',
      '/tmp',
      '-v',
      `${findNatsServer()}:/usr/local/bin/nats-server:ro`,
      '--entrypoint',
      '/usr/local/bin/nats-server',
      IMAGE,
      '-js',
      '-a',
      '127.0.0.1',
      '-p',
      String(ports.nats),
      '-sd',
      '/tmp/js',
    );
    for (const role of ROLES) runService(role);
    await Promise.all(ROLES.map((role) => serving(`127.0.0.1:${ports[role]}`)));
  }, 300_000);

  afterAll(() => {
    if (process.env.DUEL_IMAGE_TESTS_KEEP !== '1') remove();
  });

  it('run as uid 10001 on a read-only root, from the image entrypoint', () => {
    for (const role of ROLES) {
      const c = JSON.parse(docker('inspect', name(role)))[0];
      expect(c.Config.User, role).toBe('10001:10001');
      expect(c.HostConfig.ReadonlyRootfs, role).toBe(true);
      expect(c.Config.Entrypoint, role).toEqual(['node', '/app/dist/bin/duel-serve.js']);
      expect(docker('exec', name(role), 'id', '-u')).toBe('10001');
      expect(() => docker('exec', name(role), 'touch', '/app/x'), role).toThrow();
    }
  });

  it('complete a 2-round run from `duel run`; a sampler stopped with SIGTERM mid-run drains and comes back', async () => {
    const spec = writeTinySpec(root, 'images');
    const address = `127.0.0.1:${ports.orchestrator}`;
    // The built command submits and follows the run, as a user would.
    const cli = spawn(
      process.execPath,
      [join('dist', 'bin', 'main.js'), 'run', '--spec', spec, '--server', address, '--id', 'images'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    cli.stdout.on('data', (d: Buffer) => {
      output += d.toString();
    });
    cli.stderr.on('data', (d: Buffer) => {
      output += d.toString();
    });
    const exited = new Promise<number>((resolve) => cli.once('exit', (code) => resolve(code ?? -1)));
    // Beside it, a watcher stops the sampler with SIGTERM once round 1 has started.
    const c = runsClient(address);
    let drained: Promise<number> | undefined;
    const follow = () =>
      followRun(c, 'images', true, (e) => {
        if (e.kind === EventKind.EVENT_KIND_ROUND_STARTED && e.round === 1 && !drained)
          drained = (async () => {
            docker('kill', '--signal', 'TERM', name('sampler'));
            const code = Number(docker('wait', name('sampler')));
            docker('start', name('sampler'));
            return code;
          })();
      });
    // Until the command has created the run.
    let run: Awaited<ReturnType<typeof followRun>> | undefined;
    for (const until = Date.now() + 60_000; !run; ) {
      run = await follow().catch(async (e: Error) => {
        if (!/no run 'images'/.test(e.message) || Date.now() > until || cli.exitCode !== null)
          throw new Error(`${e.message}; duel run said: ${output}`);
        await new Promise((r) => setTimeout(r, 200));
        return undefined;
      });
    }
    c.close();
    expect(await exited, output).toBe(0);
    expect(await drained).toBe(0);
    expect(run.state, run.message).toBe(RunState.RUN_STATE_SUCCEEDED);
    expect(run.latestCheckpoint!.artifact!.uri).toBe('nats://duel_artifacts/runs/images/round-2');
  }, 300_000);
});
