/**
 * The artifact store behind ArtifactRef: immutable directories (models, checkpoints) addressed by
 * URI and verified by digest. An artifact's digest is the sha256 of its manifest (manifest.json:
 * every file's name, size and sha256), so one hash pins every byte. `file://` stores live under a
 * root directory: a put builds the artifact beside its final name and renames it into place, so
 * a reader never sees half of one; names cannot escape the root; a get verifies the manifest
 * digest and every file before handing the directory out.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { DuelError } from '../errors.js';

export const MANIFEST = 'manifest.json';

export interface ArtifactRef {
  uri: string;
  sha256: string;
}

/** An artifact that exists: its verified local directory and its reference. */
export interface FoundArtifact {
  dir: string;
  ref: ArtifactRef;
}

/**
 * What the trainer publishes into: the file:// store on a shared volume or the nats:// object
 * store. Results may be promises (the file store answers at once, the object store over NATS).
 */
export interface ArtifactStore {
  find(name: string): FoundArtifact | undefined | Promise<FoundArtifact | undefined>;
  put(srcDir: string, name: string): ArtifactRef | Promise<ArtifactRef>;
  get(ref: ArtifactRef): string | Promise<string>;
  /** Deletes artifact `name` (its manifest first, so it stops existing before its files go). */
  remove(name: string): void | Promise<void>;
}

interface Manifest {
  files: Record<string, { bytes: number; sha256: string }>;
}

export const sha256 = (bytes: Uint8Array | string) => createHash('sha256').update(bytes).digest('hex');

/**
 * A file's size and SHA-256, read 8 MiB at a time: a weights file or a session snapshot may be
 * larger than one read (2 GiB) and than the memory one should spend on hashing it.
 */
export function fileDigest(path: string): { bytes: number; sha256: string } {
  const hash = createHash('sha256');
  const chunk = Buffer.allocUnsafe(8 << 20);
  const fd = openSync(path, 'r');
  let bytes = 0;
  try {
    for (let n = readSync(fd, chunk); n > 0; n = readSync(fd, chunk)) {
      hash.update(chunk.subarray(0, n));
      bytes += n;
    }
  } finally {
    closeSync(fd);
  }
  return { bytes, sha256: hash.digest('hex') };
}

/** Every regular file under `dir`, as sorted '/'-separated relative paths. */
export function listFiles(dir: string, prefix = ''): string[] {
  return readdirSync(join(dir, prefix), { withFileTypes: true })
    .flatMap((e) => {
      const rel = prefix ? `${prefix}/${e.name}` : e.name;
      if (e.isDirectory()) return listFiles(dir, rel);
      return e.isFile() ? [rel] : [];
    })
    .sort();
}

const filesOf = (dir: string) => listFiles(dir).filter((rel) => rel !== MANIFEST);

/** Writes manifest.json for a directory and returns the artifact digest (the manifest's sha256). */
export function writeManifest(dir: string): string {
  const { text, digest } = manifestOf(dir);
  writeFileSync(join(dir, MANIFEST), text);
  return digest;
}

/** The manifest a directory would get (every file but manifest.json) and its digest, written nowhere. */
export function manifestOf(dir: string): ArtifactManifest {
  const files: Manifest['files'] = {};
  for (const rel of filesOf(dir)) files[rel] = fileDigest(join(dir, rel));
  return manifestFrom(files);
}

/** A manifest as written (its text) and its digest. */
export interface ArtifactManifest {
  text: string;
  digest: string;
}

/** The manifest of files whose sizes and digests are known (taken as they were written). */
export function manifestFrom(files: Manifest['files']): ArtifactManifest {
  const sorted = Object.fromEntries(Object.entries(files).sort(([a], [b]) => (a < b ? -1 : 1)));
  const text = `${JSON.stringify({ files: sorted }, null, 2)}\n`;
  return { text, digest: sha256(text) };
}

/** Checks a directory against its manifest and the expected digest; every mismatch is named. */
export function verifyArtifact(dir: string, expected: string): void {
  const path = join(dir, MANIFEST);
  if (!existsSync(path)) throw DuelError.failedPrecondition(`artifact ${dir} has no ${MANIFEST}`);
  const text = readFileSync(path);
  const actual = sha256(text);
  if (actual !== expected)
    throw DuelError.failedPrecondition(
      `artifact ${dir}: manifest digest ${actual} does not match the reference's ${expected}`,
    );
  const manifest = JSON.parse(text.toString('utf8')) as Manifest;
  const present = new Set(filesOf(dir));
  for (const [rel, want] of Object.entries(manifest.files)) {
    if (!present.has(rel)) throw DuelError.failedPrecondition(`artifact ${dir}: ${rel} is missing`);
    const got = fileDigest(join(dir, rel)).sha256;
    if (got !== want.sha256)
      throw DuelError.failedPrecondition(
        `artifact ${dir}: ${rel} has sha256 ${got}, the manifest says ${want.sha256}`,
      );
    present.delete(rel);
  }
  if (present.size > 0)
    throw DuelError.failedPrecondition(`artifact ${dir}: ${[...present].join(', ')} not in the manifest`);
}

export class FileArtifactStore implements ArtifactStore {
  readonly root: string;

  constructor(root: string) {
    this.root = resolve(root);
    mkdirSync(this.root, { recursive: true });
  }

  /** The directory of `name` under the root; a name that would leave the root is refused. */
  private pathOf(name: string): string {
    const bad = () =>
      DuelError.invalidArgument([
        { field: 'name', description: `'${name}' is not a name inside the artifact store` },
      ]);
    if (name === '' || isAbsolute(name) || name.includes('\0')) throw bad();
    const path = resolve(this.root, name);
    const rel = relative(this.root, path);
    if (rel === '' || rel.startsWith('..') || isAbsolute(rel) || rel.split(sep).includes('..')) throw bad();
    return path;
  }

  /** The verified directory and reference of an existing artifact `name`, or undefined. */
  find(name: string): FoundArtifact | undefined {
    const dir = this.pathOf(name);
    if (!existsSync(dir)) return undefined;
    const digest = sha256(readFileSync(join(dir, MANIFEST)));
    verifyArtifact(dir, digest);
    return { dir, ref: { uri: pathToFileURL(dir).href, sha256: digest } };
  }

  /** Throws unless `name` is a new artifact name inside the root (check before costly work). */
  checkNewName(name: string): void {
    if (existsSync(this.pathOf(name)))
      throw DuelError.failedPrecondition(`artifact '${name}' already exists; artifacts are immutable`);
  }

  /**
   * Copies `srcDir` into the store as `name` (immutable: an existing artifact of that name is
   * an error) and returns its reference; `move` renames it in instead (a directory the caller
   * built for this, best under `scratch()`: on the store's filesystem the move is free). A
   * `manifest` the caller took as it wrote the files (manifestFrom) is trusted, not recomputed.
   */
  put(srcDir: string, name: string, o: { move?: boolean; manifest?: ArtifactManifest } = {}): ArtifactRef {
    const dest = this.pathOf(name);
    if (existsSync(dest))
      throw DuelError.failedPrecondition(`artifact '${name}' already exists; artifacts are immutable`);
    if (!existsSync(srcDir) || !statSync(srcDir).isDirectory())
      throw DuelError.invalidArgument([{ field: 'src', description: `${srcDir} is not a directory` }]);
    const tmp = `${dest}.tmp-${randomBytes(6).toString('hex')}`;
    mkdirSync(resolve(dest, '..'), { recursive: true });
    try {
      if (o.move) moveDir(srcDir, tmp);
      else cpSync(srcDir, tmp, { recursive: true });
      rmSync(join(tmp, MANIFEST), { force: true });
      // A manifest taken as the files were written saves reading them all again here.
      if (o.manifest) writeFileSync(join(tmp, MANIFEST), o.manifest.text);
      const digest = o.manifest ? o.manifest.digest : writeManifest(tmp);
      renameSync(tmp, dest);
      return { uri: pathToFileURL(dest).href, sha256: digest };
    } catch (e) {
      rmSync(tmp, { recursive: true, force: true });
      throw e;
    }
  }

  /** A fresh directory on the store's filesystem to build an artifact in before a moving put. */
  scratch(): string {
    return mkdtempSync(join(this.root, '.scratch-'));
  }

  remove(name: string): void {
    const dir = this.pathOf(name);
    rmSync(join(dir, MANIFEST), { force: true });
    rmSync(dir, { recursive: true, force: true });
  }

  /** The verified local directory of a reference into this store. */
  get(ref: ArtifactRef): string {
    if (!ref.uri.startsWith('file://'))
      throw DuelError.invalidArgument([
        { field: 'artifact.uri', description: `this store reads file:// URIs, got ${ref.uri}` },
      ]);
    const path = filePathOf(ref.uri);
    const name = relative(this.root, path);
    const dir = this.pathOf(name.split(sep).join('/'));
    if (!existsSync(dir)) throw DuelError.notFound(`artifact ${ref.uri} does not exist`);
    verifyArtifact(dir, ref.sha256);
    return dir;
  }
}

/** Renames a directory, copying it where the rename cannot cross filesystems. */
function moveDir(from: string, to: string): void {
  try {
    renameSync(from, to);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
    cpSync(from, to, { recursive: true });
    rmSync(from, { recursive: true, force: true });
  }
}

/** The path of a file:// URI; a URI Node cannot map to a path (a host, bad escapes) is the caller's error. */
function filePathOf(uri: string): string {
  try {
    return fileURLToPath(uri);
  } catch (e) {
    throw DuelError.invalidArgument([
      { field: 'artifact.uri', description: `${uri}: ${(e as Error).message}` },
    ]);
  }
}

/** Any reference to its verified local directory (see ArtifactResolver for nats://). */
export type ResolveArtifact = (ref: ArtifactRef) => Promise<string>;

/** The resolver of services that read only file:// artifacts. */
export const resolveFileArtifact: ResolveArtifact = async (ref) => localArtifactDir(ref);

/** A reference's identity for caches: the URI and the digest together. */
export function artifactKey(ref: ArtifactRef): string {
  return `${ref.uri}#${ref.sha256}`;
}

/**
 * The verified local directory of a reference. Services read `file://` artifacts directly (the
 * path is the artifact); other schemes need the store that serves them.
 */
export function localArtifactDir(ref: ArtifactRef): string {
  if (!ref.uri.startsWith('file://'))
    throw DuelError.unavailable(
      `${ref.uri}: this service reads file:// artifacts and has no store for that scheme`,
    );
  const dir = filePathOf(ref.uri);
  if (!existsSync(dir)) throw DuelError.notFound(`artifact ${ref.uri} does not exist`);
  verifyArtifact(dir, ref.sha256);
  return dir;
}
