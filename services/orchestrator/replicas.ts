/**
 * A stage's work spread over the replicas of one role (samplers or scorers). Shards go to whichever
 * replica is free next; a replica that fails a shard with a transient status (it died, it is
 * draining, its queue is full) leaves the pass and the shard goes back for the others. When every
 * replica has left, the pool waits and tries them all again, until `maxWaitMs` passes without any
 * shard finishing. Any other status fails the stage at once: retrying bad input elsewhere is futile.
 * Results do not depend on which replica ran a shard: sampling seeds are per prompt, not per call.
 * An address `dns:///host:port` stands for every address `host` resolves to (a Kubernetes headless
 * Service), looked up again at every stage, so replicas added or removed join or leave the next one.
 */
import { lookup } from 'node:dns/promises';
import type * as grpc from '@grpc/grpc-js';
import { DuelError } from '../../src/errors.js';
import { isTransient } from '../../src/platform/grpc/client.js';
import type { Logger } from '../../src/platform/logger.js';

export interface Replica<C> {
  address: string;
  client: C;
}

export interface PoolOptions {
  /** Give up after this long without progress. */
  maxWaitMs: number;
  /** First pause after every replica failed; doubles up to 5 s. */
  backoffMs: number;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });

export class ReplicaPool<C extends grpc.Client> {
  private readonly clients = new Map<string, Replica<C>>();

  constructor(
    readonly role: string,
    readonly addresses: string[],
    private readonly make: (address: string) => C,
    private readonly log: Logger,
    private readonly options: PoolOptions = { maxWaitMs: 120_000, backoffMs: 250 },
  ) {}

  close(): void {
    for (const r of this.clients.values()) r.client.close();
    this.clients.clear();
  }

  /** The replicas as of now: plain addresses as given, `dns:///` names expanded to every address. */
  async replicas(): Promise<Replica<C>[]> {
    const expanded = await Promise.all(
      this.addresses.map(async (a) => {
        const m = /^dns:\/\/\/(.+):(\d+)$/.exec(a);
        if (!m) return [a];
        try {
          const found = await lookup(m[1]!, { all: true });
          return found.map((f) => (f.family === 6 ? `[${f.address}]:${m[2]}` : `${f.address}:${m[2]}`));
        } catch (e) {
          // No replica right now (scaled to zero, DNS not yet updated): the stage waits for one.
          this.log.warn({ role: this.role, address: a, err: (e as Error).message }, 'no replicas resolved');
          return [];
        }
      }),
    );
    return [...new Set(expanded.flat())].map((address) => {
      let r = this.clients.get(address);
      if (!r) {
        r = { address, client: this.make(address) };
        this.clients.set(address, r);
      }
      return r;
    });
  }

  /**
   * Runs `work` on every shard over at most `maxReplicas` replicas (0: all) and returns the results
   * in shard order.
   */
  async map<S, R>(
    shards: S[],
    work: (client: C, shard: S, signal: AbortSignal) => Promise<R>,
    maxReplicas: number,
    signal: AbortSignal,
  ): Promise<R[]> {
    if (this.addresses.length === 0)
      throw DuelError.failedPrecondition(`the orchestrator knows no ${this.role} replicas`);
    const results = new Array<R>(shards.length);
    const pending = shards.map((_, i) => i);
    const stop = new AbortController();
    const abort = () => stop.abort(signal.reason);
    signal.addEventListener('abort', abort, { once: true });
    let lastProgress = Date.now();
    let backoff = this.options.backoffMs;
    let failure: DuelError | undefined;

    const worker = async (r: Replica<C>) => {
      for (let i = pending.shift(); i !== undefined; i = pending.shift()) {
        try {
          results[i] = await work(r.client, shards[i]!, stop.signal);
          lastProgress = Date.now();
          backoff = this.options.backoffMs;
        } catch (e) {
          pending.unshift(i);
          const err = DuelError.from(e);
          if (stop.signal.aborted) return;
          if (!isTransient(err)) {
            failure ??= err;
            stop.abort(err);
            return;
          }
          this.log.warn(
            { replica: r.address, role: this.role, shard: i, err: err.message },
            'replica failed a shard; moving it',
          );
          return;
        }
      }
    };

    let use: Replica<C>[] = [];
    try {
      while (pending.length > 0) {
        const all = await this.replicas();
        use = all.slice(0, maxReplicas > 0 ? maxReplicas : all.length);
        await Promise.all(use.map(worker));
        if (failure) throw failure;
        if (signal.aborted) throw DuelError.from(signal.reason ?? new Error('cancelled'));
        if (pending.length === 0) break;
        if (Date.now() - lastProgress > this.options.maxWaitMs)
          throw DuelError.unavailable(
            `no ${this.role} replica finished a shard for ${this.options.maxWaitMs} ms (${this.addresses.join(', ')} → ${use.map((r) => r.address).join(', ') || 'none resolved'})`,
          );
        await sleep(backoff, signal);
        backoff = Math.min(backoff * 2, 5000);
      }
      return results;
    } finally {
      signal.removeEventListener('abort', abort);
    }
  }
}
