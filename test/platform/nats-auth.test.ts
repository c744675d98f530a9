/**
 * NATS authentication and TLS from the `nats.*` settings, against real nats-servers configured to
 * demand them: user/password, token, nkey, and TLS with client certificates. A client without
 * the right credentials is refused, and the refusal never shows the password.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { nkeys } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectNats, type NatsSettings } from '../../src/platform/nats.js';
import { NatsServer } from '../../src/platform/nats-server.js';
import { type Pki, writePki } from '../helpers/pki.js';
import { fileTempDir } from '../helpers/tmp.js';

const dir = fileTempDir('duel-nats-auth-');
const servers: NatsServer[] = [];
let users: NatsServer;
let token: NatsServer;
let tls: NatsServer;
let pki: Pki;
let rogue: Pki;
const nkey = nkeys.createUser();
const seedFile = join(dir, 'user.nk');

async function serverWith(name: string, conf: string): Promise<NatsServer> {
  const file = join(dir, `${name}.conf`);
  writeFileSync(file, conf);
  const s = await NatsServer.start({ configFile: file });
  servers.push(s);
  return s;
}

beforeAll(async () => {
  pki = writePki(dir);
  rogue = writePki(dir, 'rogue-');
  writeFileSync(seedFile, `${new TextDecoder().decode(nkey.getSeed())}\n`);
  users = await serverWith(
    'users',
    `authorization { users = [ { user: alice, password: "s3cret" }, { nkey: ${nkey.getPublicKey()} } ] }\n`,
  );
  token = await serverWith('token', 'authorization { token: "t0ken" }\n');
  tls = await serverWith(
    'tls',
    `tls { cert_file: "${pki.serverCert}", key_file: "${pki.serverKey}", ca_file: "${pki.ca}", verify: true }\n`,
  );
}, 60_000);

afterAll(async () => {
  for (const s of servers) await s.stop();
});

/** Connects, proves the connection works with a request round trip through the server, closes. */
async function works(s: NatsSettings): Promise<void> {
  const nc = await connectNats(s, 'auth-test', { maxReconnectAttempts: 0 });
  const sub = nc.subscribe('echo', { max: 1, callback: (_e, m) => m.respond(m.data) });
  const reply = await nc.request('echo', new TextEncoder().encode('hi'), { timeout: 2000 });
  expect(new TextDecoder().decode(reply.data)).toBe('hi');
  sub.unsubscribe();
  await nc.close();
}

const refused = (s: NatsSettings) =>
  expect(connectNats(s, 'auth-test', { maxReconnectAttempts: 0, reconnect: false })).rejects.toThrow(
    /cannot reach NATS/,
  );

describe('NATS user/password and nkey', () => {
  it('lets in alice with her password, and a user by nkey signature', async () => {
    await works({ url: users.url, user: 'alice', password: 's3cret' });
    await works({ url: users.url, nkeySeed: seedFile });
  });

  it('refuses a client without credentials or with a wrong password, and never echoes the password', async () => {
    await refused({ url: users.url });
    await refused({ url: users.url, user: 'alice', password: 'guess' });
    const inUrl = users.url.replace('nats://', 'nats://alice:guess@');
    const err = await connectNats(inUrl, 'auth-test', { maxReconnectAttempts: 0, reconnect: false }).catch(
      (e: Error) => e,
    );
    expect((err as Error).message).toMatch(/nats:\/\/\*\*\*@127\.0\.0\.1/);
    expect((err as Error).message).not.toMatch(/guess/);
  });

  it('names the field when the seed file is missing', async () => {
    await expect(
      connectNats({ url: users.url, nkeySeed: join(dir, 'nope.nk') }, 'auth-test'),
    ).rejects.toThrow(/nats\.nkeySeed: cannot read/);
  });
});

describe('NATS token', () => {
  it('lets in the token holder and refuses everyone else', async () => {
    await works({ url: token.url, token: 't0ken' });
    await refused({ url: token.url });
    await refused({ url: token.url, token: 'wrong' });
  });
});

describe('NATS over TLS with client certificates', () => {
  it('lets in a client with a certificate the CA signed, and refuses one without or with a foreign one', async () => {
    await works({ url: tls.url, tls: { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey } });
    await refused({ url: tls.url });
    await refused({ url: tls.url, tls: { ca: pki.ca } });
    await refused({ url: tls.url, tls: { ca: pki.ca, cert: rogue.clientCert, key: rogue.clientKey } });
  });
});
