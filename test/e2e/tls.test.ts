/**
 * The suite under mutual TLS, configured only by DUEL_TLS_* as a container would be: every
 * service serves mTLS, the orchestrator calls the workers with its certificate, and a run
 * completes; a client without the right certificate is refused by the orchestrator and a worker.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '../../src/client/local-cluster.js';
import { submitRun } from '../../src/client/runs.js';
import { RunState } from '../../src/gen/duel/v1/runs.js';
import { PolicySamplerServiceClient } from '../../src/gen/duel/v1/sampler.js';
import { callUnary } from '../../src/platform/grpc/client.js';
import { readRunSpec } from '../../src/platform/run-spec.js';
import { channelCredentials } from '../../src/platform/tls.js';
import { healthCheck } from '../helpers/grpc.js';
import { type Pki, writePki } from '../helpers/pki.js';
import { writeTinyRun, writeTinySpec } from '../helpers/tiny-run.js';

let root: string;
let pki: Pki;
let rogue: Pki;
let cluster: LocalCluster;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'duel-tls-e2e-'));
  pki = writePki(root);
  rogue = writePki(root, 'rogue-');
  writeTinyRun(root);
  cluster = await LocalCluster.start({
    artifactsRoot: join(root, 'artifacts'),
    logDir: join(root, 'logs'),
    bus: 'memory',
    env: {
      DUEL_TLS_CERT: pki.serverCert,
      DUEL_TLS_KEY: pki.serverKey,
      DUEL_TLS_CA: pki.ca,
      DUEL_TLS_CLIENT_AUTH: 'true',
    },
    // The workers answer only the orchestrator, whose certificate is the services' "duel server".
    roleEnv: Object.fromEntries(
      (['sampler', 'scorer', 'trainer'] as const).map((r) => [
        r,
        { DUEL_TLS_ALLOWED_CLIENTS: 'duel server' },
      ]),
    ),
  });
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

const creds = (cert: string, key: string, ca = pki.ca) =>
  channelCredentials({ cert, key, ca, clientAuth: false, allowedClients: [] });

describe('mutual TLS across the suite', () => {
  it('lets only the orchestrator call the workers: an operator certificate gets PERMISSION_DENIED', async () => {
    const c = new PolicySamplerServiceClient(
      cluster.samplers[0]!.address,
      creds(pki.clientCert, pki.clientKey),
    );
    try {
      await expect(
        callUnary(c, c.unloadModel, { model: undefined }, { deadlineMs: 10_000 }, 'UnloadModel'),
      ).rejects.toMatchObject({
        code: 7,
        message: expect.stringMatching(/'duel client' is not in this server's tls\.allowedClients/),
      });
    } finally {
      c.close();
    }
  });

  it('completes a run with every call over mTLS', async () => {
    const run = await submitRun(
      cluster.orchestrator.address,
      readRunSpec(writeTinySpec(root, 'tls', { rounds: 1 })),
      {
        id: 'tls',
        log: () => {},
        credentials: creds(pki.clientCert, pki.clientKey),
      },
    );
    expect(run.state).toBe(RunState.RUN_STATE_SUCCEEDED);
  });

  it('refuses plaintext, certificate-less and foreign-certificate clients at every service', async () => {
    for (const s of [cluster.orchestrator, cluster.samplers[0]!, cluster.trainer]) {
      expect(await healthCheck(s.address, '', creds(pki.clientCert, pki.clientKey))).toBe('SERVING');
      await expect(healthCheck(s.address)).rejects.toMatchObject({ code: 14 });
      await expect(
        healthCheck(
          s.address,
          '',
          channelCredentials({ cert: '', key: '', ca: pki.ca, clientAuth: false, allowedClients: [] }),
        ),
      ).rejects.toMatchObject({ code: 14 });
      await expect(
        healthCheck(s.address, '', creds(rogue.clientCert, rogue.clientKey)),
      ).rejects.toMatchObject({
        code: 14,
      });
    }
  });
});
