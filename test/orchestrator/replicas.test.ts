/** Replica discovery: plain addresses as given, `dns:///` names expanded to every address they resolve to. */
import * as grpc from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { ReplicaPool } from '../../services/orchestrator/replicas.js';
import { createLogger } from '../../src/platform/logger.js';

const log = createLogger('test', { level: 'silent' });
const make = (a: string) => new grpc.Client(a, grpc.credentials.createInsecure());

describe('ReplicaPool', () => {
  it('expands a dns:/// name to one replica per address, keeps plain addresses, and reuses clients', async () => {
    const pool = new ReplicaPool('sampler', ['dns:///localhost:7001', '10.0.0.9:7002'], make, log);
    const first = await pool.replicas();
    const addresses = first.map((r) => r.address);
    expect(addresses).toContain('127.0.0.1:7001');
    expect(addresses).toContain('10.0.0.9:7002');
    expect(addresses.every((a) => !a.startsWith('dns:'))).toBe(true);
    const again = await pool.replicas();
    expect(again[0]!.client).toBe(first[0]!.client);
    pool.close();
  });

  it('resolves a name with no addresses to no replicas, and a stage then waits and fails UNAVAILABLE', async () => {
    const pool = new ReplicaPool('scorer', ['dns:///no-such-host.invalid:1'], make, log, {
      maxWaitMs: 300,
      backoffMs: 50,
    });
    expect(await pool.replicas()).toEqual([]);
    const err = await pool
      .map([1, 2], async () => 0, 0, new AbortController().signal)
      .catch((e: Error & { code?: number }) => e);
    expect((err as Error).message).toMatch(/no scorer replica finished a shard .*none resolved/);
    pool.close();
  });
});
