/**
 * The `nats://<bucket>/<name>` artifact store: artifacts in a JetStream object store, for clusters
 * where the services share NATS but no volume. Each file of an artifact is one object
 * `<name>/<path>`; `<name>/manifest.json` is written last and is the commit point: an artifact
 * without it does not exist, so a reader never sees half of a put. A get downloads into a local
 * cache addressed by the manifest's digest (immutable content, so entries never go stale), checks
 * the committed manifest against the reference and every file against the manifest, and renames the
 * verified directory into place; a digest mismatch is a FAILED_PRECONDITION naming the file.
 */
import { randomBytes } from 'node:crypto';
import {
  createReadStream,
  createWriteStream,
  existsSync,
  mkdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { NatsConnection, ObjectStore } from 'nats';
import { DuelError } from '../errors.js';
import {
  type ArtifactRef,
  type FoundArtifact,
  listFiles,
  MANIFEST,
  manifestOf,
  sha256,
  verifyArtifact,
} from './artifacts.js';
import { ensureReplicas, replicasOf } from './nats.js';

/** Object payloads per chunk: under nats-server's default 1 MiB max_payload with room for headers. */
const CHUNK_BYTES = 512 * 1024;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)*$/;
const BUCKET = /^[A-Za-z0-9_-]+$/;

const natsArtifactUri = (bucket: string, name: string) => `nats://${bucket}/${name}`;

/** The bucket and name of a `nats://` reference. */
export function parseNatsArtifactUri(uri: string): { bucket: string; name: string } {
  const m = /^nats:\/\/([^/]+)\/(.+)$/.exec(uri);
  if (!m || !BUCKET.test(m[1]!) || !NAME.test(m[2]!))
    throw DuelError.invalidArgument([
      { field: 'artifact.uri', description: `'${uri}' is not nats://<bucket>/<name>` },
    ]);
  return { bucket: m[1]!, name: m[2]! };
}

export class NatsArtifactStore {
  private constructor(
    readonly bucket: string,
    private readonly os: ObjectStore,
    /** Local directory holding verified downloads, one per manifest digest. */
    readonly cacheRoot: string,
  ) {}

  static async open(nc: NatsConnection, bucket: string, cacheRoot: string): Promise<NatsArtifactStore> {
    if (!BUCKET.test(bucket))
      throw DuelError.invalidArgument([
        { field: 'artifacts.bucket', description: `'${bucket}' may hold only letters, digits, _ and -` },
      ]);
    mkdirSync(cacheRoot, { recursive: true });
    const replicas = replicasOf(nc);
    const os = await nc.jetstream().views.os(bucket, {
      description: 'duel artifacts (models, checkpoints)',
      replicas,
    });
    await ensureReplicas(await nc.jetstreamManager(), `OBJ_${bucket}`, replicas);
    return new NatsArtifactStore(bucket, os, cacheRoot);
  }

  private checkName(name: string): void {
    if (!NAME.test(name) || name.split('/').some((s) => s === '.' || s === '..'))
      throw DuelError.invalidArgument([
        { field: 'name', description: `'${name}' is not a name inside the artifact store` },
      ]);
  }

  private async exists(name: string): Promise<boolean> {
    const info = await this.os.info(`${name}/${MANIFEST}`);
    // A removed artifact's manifest is a delete marker.
    return info !== null && !info.deleted;
  }

  private async checkNewName(name: string): Promise<void> {
    this.checkName(name);
    if (await this.exists(name))
      throw DuelError.failedPrecondition(`artifact '${name}' already exists; artifacts are immutable`);
  }

  /**
   * Uploads `srcDir` as `name`: every file, then the manifest. A put that dies halfway leaves
   * objects no manifest names; the next put of that name overwrites them.
   */
  async put(srcDir: string, name: string): Promise<ArtifactRef> {
    if (!existsSync(srcDir) || !statSync(srcDir).isDirectory())
      throw DuelError.invalidArgument([{ field: 'src', description: `${srcDir} is not a directory` }]);
    await this.checkNewName(name);
    // Hashed before the upload and never written into the caller's directory: a file that changes
    // while it uploads no longer matches the manifest, and every reader refuses it.
    const manifest = manifestOf(srcDir);
    for (const rel of listFiles(srcDir).filter((f) => f !== MANIFEST)) {
      const rs = Readable.toWeb(createReadStream(join(srcDir, rel))) as ReadableStream<Uint8Array>;
      await this.os.put({ name: `${name}/${rel}`, options: { max_chunk_size: CHUNK_BYTES } }, rs);
    }
    await this.os.putBlob({ name: `${name}/${MANIFEST}` }, Buffer.from(manifest.text));
    return { uri: natsArtifactUri(this.bucket, name), sha256: manifest.digest };
  }

  async remove(name: string): Promise<void> {
    this.checkName(name);
    await this.os.delete(`${name}/${MANIFEST}`);
    for (const o of await this.os.list())
      if (o.name.startsWith(`${name}/`) && !o.deleted) await this.os.delete(o.name);
  }

  /** The verified artifact `name` and its reference, or undefined when no manifest was committed. */
  async find(name: string): Promise<FoundArtifact | undefined> {
    this.checkName(name);
    const manifest = await this.os.getBlob(`${name}/${MANIFEST}`);
    if (!manifest) return undefined;
    const ref = { uri: natsArtifactUri(this.bucket, name), sha256: sha256(manifest) };
    return { dir: await this.get(ref), ref };
  }

  /** The verified local directory of `ref`, downloaded once per digest. */
  async get(ref: ArtifactRef): Promise<string> {
    const { bucket, name } = parseNatsArtifactUri(ref.uri);
    if (bucket !== this.bucket)
      throw DuelError.invalidArgument([
        { field: 'artifact.uri', description: `${ref.uri} is not in bucket ${this.bucket}` },
      ]);
    if (!/^[0-9a-f]{64}$/.test(ref.sha256))
      throw DuelError.invalidArgument([
        { field: 'artifact.sha256', description: 'must be 64 lower-case hex digits' },
      ]);
    // The small manifest is always fetched: the cache answers for bytes, not for whether the
    // artifact still exists under this name with this digest.
    const manifestBytes = await this.os.getBlob(`${name}/${MANIFEST}`);
    if (!manifestBytes) throw DuelError.notFound(`artifact ${ref.uri} does not exist`);
    const actual = sha256(manifestBytes);
    if (actual !== ref.sha256)
      throw DuelError.failedPrecondition(
        `artifact ${ref.uri}: manifest digest ${actual} does not match the reference's ${ref.sha256}`,
      );
    const cached = join(this.cacheRoot, ref.sha256);
    if (existsSync(cached)) {
      verifyArtifact(cached, ref.sha256);
      return cached;
    }
    const manifest = JSON.parse(Buffer.from(manifestBytes).toString('utf8')) as {
      files: Record<string, unknown>;
    };
    const tmp = join(this.cacheRoot, `.get-${randomBytes(6).toString('hex')}`);
    try {
      for (const rel of Object.keys(manifest.files)) {
        const obj = await this.os.get(`${name}/${rel}`);
        if (!obj) throw DuelError.failedPrecondition(`artifact ${ref.uri}: ${rel} is missing`);
        const dest = join(tmp, rel);
        mkdirSync(dirname(dest), { recursive: true });
        await pipeline(Readable.fromWeb(obj.data as never), createWriteStream(dest));
        const err = await obj.error;
        if (err) throw DuelError.unavailable(`artifact ${ref.uri}: reading ${rel} failed: ${err.message}`);
      }
      mkdirSync(tmp, { recursive: true });
      writeFileSync(join(tmp, MANIFEST), manifestBytes);
      try {
        verifyArtifact(tmp, ref.sha256);
      } catch (e) {
        throw DuelError.failedPrecondition((e as Error).message.replace(tmp, ref.uri));
      }
      settle(tmp, cached);
      return cached;
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }
}

/** Renames a verified download into the cache; a reader that raced us there verified the same bytes. */
function settle(tmp: string, cached: string): void {
  try {
    renameSync(tmp, cached);
  } catch (e) {
    if (!existsSync(cached)) throw e;
  }
}
