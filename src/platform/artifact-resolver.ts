/**
 * Turns any ArtifactRef a request carries into a verified local directory: `file://` is read in
 * place, `nats://<bucket>/...` is downloaded through that bucket's object store (one NATS
 * connection, opened on first use, so services that only see file:// never need NATS, nor load
 * its client). It also builds the store the trainer publishes into, from `artifacts.store`.
 */
import type { NatsConnection } from 'nats';
import { DuelError } from '../errors.js';
import { type ArtifactRef, type ArtifactStore, FileArtifactStore, localArtifactDir } from './artifacts.js';
import type { NatsSettings } from './nats.js';
import type { NatsArtifactStore } from './nats-artifacts.js';

/** The NATS client and object-store code, loaded with the first nats:// artifact. */
const natsModules = () => Promise.all([import('./nats.js'), import('./nats-artifacts.js')]);

export interface ArtifactSettings {
  /** Which store publishes: `file` (a directory, shared by volume) or `nats` (JetStream objects). */
  store: 'file' | 'nats';
  /** The file store's root, and the parent of the nats store's download cache. */
  root: string;
  bucket: string;
}

export class ArtifactResolver {
  private nc: Promise<NatsConnection> | undefined;
  private readonly buckets = new Map<string, Promise<NatsArtifactStore>>();

  constructor(
    readonly settings: ArtifactSettings,
    private readonly nats: NatsSettings | string,
  ) {}

  /** The verified local directory of `ref`, whatever its scheme. */
  async dir(ref: ArtifactRef): Promise<string> {
    if (ref.uri.startsWith('file://')) return localArtifactDir(ref);
    if (ref.uri.startsWith('nats://')) {
      const [, { parseNatsArtifactUri }] = await natsModules();
      return (await this.bucket(parseNatsArtifactUri(ref.uri).bucket)).get(ref);
    }
    throw DuelError.invalidArgument([
      { field: 'artifact.uri', description: `${ref.uri}: only file:// and nats:// artifacts are supported` },
    ]);
  }

  /** The store new artifacts (checkpoints) are published into. */
  async publisher(): Promise<ArtifactStore> {
    return this.settings.store === 'nats'
      ? this.bucket(this.settings.bucket)
      : new FileArtifactStore(this.settings.root);
  }

  private bucket(name: string): Promise<NatsArtifactStore> {
    let store = this.buckets.get(name);
    if (!store) {
      if (!this.nc) {
        const nc = natsModules().then(([{ connectNats }]) => connectNats(this.nats, 'duel-artifacts'));
        nc.catch(() => {
          if (this.nc === nc) this.nc = undefined;
        });
        this.nc = nc;
      }
      store = Promise.all([this.nc, natsModules()]).then(([nc, [, { NatsArtifactStore }]]) =>
        NatsArtifactStore.open(nc, name, `${this.settings.root}/.nats-cache/${name}`),
      );
      // A failed open (NATS down) is retried by the next call instead of cached.
      store.catch(() => this.buckets.delete(name));
      this.buckets.set(name, store);
    }
    return store;
  }

  async close(): Promise<void> {
    const nc = this.nc;
    this.nc = undefined;
    this.buckets.clear();
    if (nc) await (await nc.catch(() => undefined))?.drain();
  }
}
