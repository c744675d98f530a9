import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { config as trainerConfig } from '../../services/trainer/role.js';
import { DuelError, describeConfig, envName, loadConfig } from '../../src/platform/index.js';
import { serviceConfigSchema } from '../../src/platform/service-config.js';
import { tempDirs } from '../helpers/tmp.js';

const tmp = tempDirs('duel-config-');

function tempFile(name: string, text: string): string {
  const path = join(tmp(), name);
  writeFileSync(path, text);
  return path;
}

function violations(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(DuelError);
    return (e as DuelError).violations.map((v) => `${v.field}: ${v.description}`);
  }
  throw new Error('expected a DuelError');
}

describe('loadConfig', () => {
  it('uses the defaults when nothing is set', () => {
    const c = loadConfig(serviceConfigSchema, { env: {} });
    expect(c.host).toBe('127.0.0.1');
    expect(c.grpc.maxMessageBytes).toBe(64 * 1024 * 1024);
  });

  it('layers file < environment < overrides', () => {
    const file = tempFile(
      'c.yaml',
      'port: 1000\nlogLevel: debug\ngrpc:\n  shutdownGraceMs: 5\nnats:\n  url: nats://file:4222\n',
    );
    const c = loadConfig(serviceConfigSchema, {
      file,
      env: { DUEL_PORT: '2000', DUEL_GRPC_SHUTDOWN_GRACE_MS: '7' },
      overrides: { port: 3000 },
    });
    expect(c.port).toBe(3000);
    expect(c.logLevel).toBe('debug');
    expect(c.grpc.shutdownGraceMs).toBe(7);
    expect(c.nats.url).toBe('nats://file:4222');
  });

  it('names the key and the variable a bad value came from', () => {
    const msgs = violations(() =>
      loadConfig(serviceConfigSchema, { env: { DUEL_PORT: 'eighty', DUEL_NATS_URL: 'http://x' } }),
    );
    expect(msgs).toHaveLength(2);
    expect(msgs[0]).toMatch(/^port: .*expected number.*\(from DUEL_PORT\)$/);
    expect(msgs[1]).toMatch(
      /^nats\.url: must be nats:\/\/ or tls:\/\/ URLs \(comma-separated for a cluster\), or memory: \(from DUEL_NATS_URL\)$/,
    );
  });

  it('accepts the in-process bus, and refuses with it every setting that needs a NATS server', () => {
    expect(loadConfig(serviceConfigSchema, { env: { DUEL_NATS_URL: 'memory:' } }).nats.url).toBe('memory:');
    const env = { DUEL_NATS_URL: 'memory:', DUEL_ARTIFACTS_STORE: 'nats', DUEL_TRAINER_WAKE_CONSUMER: 'w' };
    // The wake consumer is the trainer's setting: its schema refuses it, the shared one never reads it.
    expect(violations(() => loadConfig(trainerConfig, { env }))).toEqual([
      'artifacts.store: the nats artifact store needs a NATS server, not the in-process bus (from DUEL_ARTIFACTS_STORE)',
      'trainer.wakeConsumer: a wake consumer needs a NATS server, not the in-process bus (from DUEL_TRAINER_WAKE_CONSUMER)',
    ]);
    expect(violations(() => loadConfig(serviceConfigSchema, { env }))).toEqual([
      'artifacts.store: the nats artifact store needs a NATS server, not the in-process bus (from DUEL_ARTIFACTS_STORE)',
    ]);
  });

  it("gives each role its own keys: another role's section is an unknown key", () => {
    const file = tempFile('trainer.json', JSON.stringify({ trainer: { wakeConsumer: 'w' } }));
    expect(loadConfig(trainerConfig, { file, env: {} }).trainer.wakeConsumer).toBe('w');
    expect(violations(() => loadConfig(serviceConfigSchema, { file, env: {} }))[0]).toMatch(
      /^trainer: unknown key/,
    );
  });

  it('refuses two NATS logins at once, and half of a user/password pair', () => {
    expect(
      violations(() =>
        loadConfig(serviceConfigSchema, { env: { DUEL_NATS_USER: 'a', DUEL_NATS_TOKEN: 't' } }),
      ),
    ).toEqual([
      'nats.token: choose one login: user, token are all set (from DUEL_NATS_TOKEN)',
      'nats.password: nats.user and nats.password go together (default)',
    ]);
  });

  it('rejects unknown keys in a file, so a misspelt setting cannot be ignored', () => {
    const file = tempFile('c.json', JSON.stringify({ grpc: { maxMesageBytes: 10 } }));
    const msgs = violations(() => loadConfig(serviceConfigSchema, { file, env: {} }));
    expect(msgs[0]).toMatch(/^grpc\.maxMesageBytes: unknown key/);
  });

  it('rejects a file that is not a mapping', () => {
    const file = tempFile('c.yaml', '- 1\n- 2\n');
    expect(violations(() => loadConfig(serviceConfigSchema, { file, env: {} }))[0]).toMatch(
      /must hold a mapping/,
    );
  });

  it('derives each environment variable from the key path', () => {
    expect(envName(['grpc', 'maxMessageBytes'])).toBe('DUEL_GRPC_MAX_MESSAGE_BYTES');
    expect(describeConfig(serviceConfigSchema).map((r) => r.env)).toContain('DUEL_METRICS_PORT');
  });
});
