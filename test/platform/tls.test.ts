import type { PeerCertificate } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GrpcServer } from '../../src/platform/grpc/server.js';
import { type DuelError, loadConfig } from '../../src/platform/index.js';
import { createLogger } from '../../src/platform/logger.js';
import { serviceConfigSchema } from '../../src/platform/service-config.js';
import {
  certificateNames,
  channelCredentials,
  clientAuthorizer,
  serverCredentials,
  type TlsConfig,
} from '../../src/platform/tls.js';
import { healthCheck } from '../helpers/grpc.js';
import { type Pki, writePki } from '../helpers/pki.js';
import { fileTempDir } from '../helpers/tmp.js';

// One directory for the whole file: the servers read their files once, the clients at each test.
const dir = fileTempDir('duel-tls-');
let pki: Pki;
let rogue: Pki;
const servers: GrpcServer[] = [];

beforeAll(() => {
  pki = writePki(dir);
  rogue = writePki(dir, 'rogue-');
});

afterAll(async () => {
  for (const s of servers) await s.shutdown('test done');
});

async function serve(t: Omit<TlsConfig, 'allowedClients'>): Promise<string> {
  const tls = { allowedClients: [], ...t };
  const server = new GrpcServer({
    logger: createLogger('tls-test', { level: 'silent' }),
    services: [],
    credentials: serverCredentials(tls),
  });
  servers.push(server);
  const port = await server.start();
  server.setServing(true);
  return `127.0.0.1:${port}`;
}

const client = (t: Partial<TlsConfig>) =>
  channelCredentials({ cert: '', key: '', ca: '', clientAuth: false, allowedClients: [], ...t });
const refused = (p: Promise<unknown>) => expect(p).rejects.toMatchObject({ code: 14 }); // UNAVAILABLE

describe('server TLS', () => {
  it('serves a client that trusts its CA, and refuses plaintext and clients that do not', async () => {
    const address = await serve({ cert: pki.serverCert, key: pki.serverKey, ca: '', clientAuth: false });
    expect(await healthCheck(address, '', client({ ca: pki.ca }))).toBe('SERVING');
    await refused(healthCheck(address));
    await refused(healthCheck(address, '', client({ ca: rogue.ca })));
  });
});

describe('mutual TLS', () => {
  let address: string;
  beforeAll(async () => {
    address = await serve({ cert: pki.serverCert, key: pki.serverKey, ca: pki.ca, clientAuth: true });
  });

  it('serves a client with a certificate its CA signed', async () => {
    expect(
      await healthCheck(address, '', client({ ca: pki.ca, cert: pki.clientCert, key: pki.clientKey })),
    ).toBe('SERVING');
  });

  it('refuses a client without a certificate, or with one another CA signed', async () => {
    await refused(healthCheck(address, '', client({ ca: pki.ca })));
    await refused(
      healthCheck(address, '', client({ ca: pki.ca, cert: rogue.clientCert, key: rogue.clientKey })),
    );
    await refused(healthCheck(address));
  });
});

describe('tls settings', () => {
  it('names the field when a file is missing or a setting is incomplete', () => {
    expect(() =>
      serverCredentials({
        cert: '/nope.crt',
        key: pki.serverKey,
        ca: '',
        clientAuth: false,
        allowedClients: [],
      }),
    ).toThrow(/tls\.cert: cannot read \/nope\.crt/);
    const msgs = (env: NodeJS.ProcessEnv) => {
      try {
        loadConfig(serviceConfigSchema, { env });
      } catch (e) {
        return (e as DuelError).violations.map((v) => `${v.field}: ${v.description}`);
      }
      return [];
    };
    expect(msgs({ DUEL_TLS_CERT: pki.serverCert })).toEqual([
      'tls.key: tls.cert and tls.key go together (default)',
    ]);
    expect(
      msgs({ DUEL_TLS_CERT: pki.serverCert, DUEL_TLS_KEY: pki.serverKey, DUEL_TLS_CLIENT_AUTH: 'true' }),
    ).toEqual(['tls.clientAuth: mutual TLS needs tls.ca, tls.cert and tls.key (from DUEL_TLS_CLIENT_AUTH)']);
    expect(
      msgs({
        DUEL_TLS_CERT: pki.serverCert,
        DUEL_TLS_KEY: pki.serverKey,
        DUEL_TLS_ALLOWED_CLIENTS: 'orchestrator',
      }),
    ).toEqual([
      'tls.allowedClients: naming allowed clients needs tls.clientAuth (without a client certificate there is no name) (from DUEL_TLS_ALLOWED_CLIENTS)',
    ]);
  });
});

describe('per-client authorization', () => {
  const cert = (cn: string, san = '') =>
    ({ subject: { CN: cn }, subjectaltname: san }) as unknown as PeerCertificate;
  const authorize = clientAuthorizer({
    cert: 'c',
    key: 'k',
    ca: 'a',
    clientAuth: true,
    allowedClients: ['orchestrator', 'ops.duel.internal'],
  })!;

  it('lets in a certificate by its common name or one of its DNS names', () => {
    expect(() => authorize(cert('orchestrator'))).not.toThrow();
    expect(() => authorize(cert('someone', 'DNS:ops.duel.internal, IP Address:10.0.0.1'))).not.toThrow();
  });

  it('refuses any other certificate with PERMISSION_DENIED naming it, and a call without one', () => {
    expect(() => authorize(cert('sampler', 'DNS:sampler.duel'))).toThrow(
      expect.objectContaining({
        code: 7,
        message: expect.stringMatching(/'sampler', 'sampler\.duel' is not in/),
      }),
    );
    expect(() => authorize(undefined)).toThrow(expect.objectContaining({ code: 7 }));
  });

  it('is off when no names are listed', () => {
    expect(
      clientAuthorizer({ cert: '', key: '', ca: '', clientAuth: false, allowedClients: [] }),
    ).toBeUndefined();
    expect(certificateNames(cert('a', 'DNS:b, DNS:c'))).toEqual(['a', 'b', 'c']);
  });
});
