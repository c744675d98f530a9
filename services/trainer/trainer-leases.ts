/**
 * Trainer replicas' liveness: each replica keeps one lease in the KV bucket duel_trainers (its id,
 * its address, a renewal counter) and renews it every third of `leaseMs`. One lease per replica,
 * not per session: a trainer with 400 LoRA sessions writes three times per lease period, not 1 200,
 * and every session it owns lives and dies with it.
 *
 * Whether another replica is alive is judged on this replica's own monotonic clock, as the
 * orchestrators judge run leases: a lease whose renewal has not changed for `leaseMs` since this
 * replica first saw it (or that is gone: a replica shutting down deletes its own) is dead. No two
 * clocks are compared. A replica that cannot renew its own lease for `leaseMs` has lost it: the
 * others may be taking its sessions, so it stops serving them (`onLost`).
 */
import { TrainerLease } from '../../src/gen/duel/v1/training.js';
import type { RecordStore } from '../../src/platform/bus.js';
import type { Logger } from '../../src/platform/logger.js';
import type { NatsConnection } from '../../src/platform/nats.js';

export const TRAINERS_BUCKET = 'duel_trainers';

export interface TrainerLeasesOptions {
  /** This replica's trainer.id. */
  id: string;
  /** Where the other replicas reach this one (host:port). */
  address: string;
  leaseMs: number;
  log?: Logger;
  /** Called once when this replica's own lease went unrenewed for leaseMs. */
  onLost?: () => void;
}

interface Seen {
  renewal: number;
  /** performance.now() when this renewal was first seen. */
  since: number;
}

export class TrainerLeases {
  private renewal = 0;
  private renewedAt = performance.now();
  private readonly seen = new Map<string, Seen>();
  private timer: NodeJS.Timeout | undefined;
  private lost = false;
  /**
   * Counts this replica's lapses: renewals that came more than leaseMs after the one before (the
   * process was paused, NATS was out of reach), and losses. What a replica verified about its
   * sessions in an earlier epoch must be verified again.
   */
  epoch = 0;

  constructor(
    private readonly store: RecordStore<TrainerLease>,
    readonly options: TrainerLeasesOptions,
  ) {}

  static async open(nc: NatsConnection, options: TrainerLeasesOptions): Promise<TrainerLeases> {
    const { CasStore } = await import('../../src/platform/nats.js');
    const store = await CasStore.open(
      nc,
      TRAINERS_BUCKET,
      (v: TrainerLease) => TrainerLease.encode(v).finish(),
      (b: Uint8Array) => TrainerLease.decode(b),
    );
    return new TrainerLeases(store, options);
  }

  get id(): string {
    return this.options.id;
  }

  get address(): string {
    return this.options.address;
  }

  /** Takes this replica's lease (continuing its renewals after a restart) and keeps renewing it. */
  async start(): Promise<void> {
    this.renewal = (await this.store.get(this.id))?.value.renewal ?? 0;
    await this.renew();
    await this.scan();
    const every = Math.max(50, Math.floor(this.options.leaseMs / 3));
    this.timer = setInterval(() => {
      void this.tick();
    }, every);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    try {
      await this.renew();
    } catch (e) {
      this.options.log?.warn({ err: (e as Error).message }, 'trainer lease not renewed; trying again');
    }
    if (!this.lost && performance.now() - this.renewedAt > this.options.leaseMs) {
      this.lost = true;
      this.epoch++;
      this.options.log?.error({ id: this.id }, 'trainer lease lost: no longer serving its sessions');
      this.options.onLost?.();
    }
    await this.scan().catch((e) =>
      this.options.log?.warn({ err: (e as Error).message }, 'trainer lease scan failed; trying again'),
    );
  }

  private async renew(): Promise<void> {
    // Measured before the write: a write that waited on an outage is a lapse too.
    const lapsed = performance.now() - this.renewedAt > this.options.leaseMs;
    const next = this.renewal + 1;
    await this.store.put(this.id, {
      holder: this.id,
      address: this.address,
      renewal: next,
      leaseMs: this.options.leaseMs,
    });
    this.renewal = next;
    if (lapsed || performance.now() - this.renewedAt > this.options.leaseMs) this.epoch++;
    this.renewedAt = performance.now();
    // Serving again after a lapse (NATS came back): the sessions restore from their journals.
    this.lost = false;
  }

  /** Reads every replica's lease and notes when each renewal was first seen. */
  async scan(): Promise<void> {
    const now = performance.now();
    const present = new Set<string>();
    for (const holder of await this.store.keys()) {
      if (holder === this.id) continue;
      const lease = (await this.store.get(holder))?.value;
      if (!lease) continue;
      present.add(holder);
      const s = this.seen.get(holder);
      if (!s || s.renewal !== lease.renewal) this.seen.set(holder, { renewal: lease.renewal, since: now });
    }
    for (const holder of this.seen.keys()) if (!present.has(holder)) this.seen.delete(holder);
  }

  /**
   * Whether this replica's own lease was renewed within leaseMs: if not (the process was paused,
   * NATS was out of reach), another replica may have taken its sessions, and what it holds in
   * memory must be checked against the records before it is served.
   */
  get fresh(): boolean {
    return !this.lost && performance.now() - this.renewedAt < this.options.leaseMs;
  }

  /**
   * `alive`, after a fresh scan when `holder` is not known yet (a replica that started since the
   * last scan: its sessions are not to be taken before its lease has been watched for leaseMs).
   */
  async aliveNow(holder: string): Promise<boolean> {
    if (holder !== this.id && !this.seen.has(holder)) await this.scan();
    return this.alive(holder);
  }

  /** Whether `holder` renewed its lease within leaseMs, as this replica has watched it. */
  alive(holder: string): boolean {
    if (holder === this.id) return !this.lost;
    const s = this.seen.get(holder);
    return s !== undefined && performance.now() - s.since < this.options.leaseMs;
  }

  /** Stops renewing; `release` also deletes the lease, so the others take its sessions at once. */
  async stop(release: boolean): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (release) await this.store.delete(this.id);
  }
}
