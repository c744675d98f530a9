/**
 * safetensors (Hugging Face's format): an 8-byte little-endian header length, a JSON header of
 * {name: {dtype, shape, data_offsets}}, then the raw little-endian bytes. Reading validates every
 * offset against the file before touching data, and names the tensor in every error; writing
 * goes through a temporary file and a rename, so a crash never leaves a half-written file under
 * the final name. Files are read and written a tensor at a time, never as one buffer, so their
 * size has no 2 GiB limit. BF16 is widened to float32 on read (the engine computes in float32/64).
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { allocate, bytesPer, type DType, type TypedArray } from './dtype.js';

export interface NamedTensor {
  dtype: DType;
  shape: number[];
  data: TypedArray;
}

const FROM_FILE: Record<string, DType | 'bf16'> = {
  F32: 'float32',
  F64: 'float64',
  F16: 'float16',
  BF16: 'bf16',
  I64: 'int64',
  I32: 'int32',
  BOOL: 'bool',
};
const TO_FILE: Record<DType, string> = {
  float32: 'F32',
  float64: 'F64',
  float16: 'F16',
  int64: 'I64',
  int32: 'I32',
  bool: 'BOOL',
};

export class SafetensorsError extends Error {
  override readonly name = 'SafetensorsError';
}

/** One tensor's entry in the header, checked against the data section. */
interface Entry {
  name: string;
  kind: DType | 'bf16';
  shape: number[];
  begin: number;
  end: number;
}

/**
 * The header (`json`, the bytes after the length) of a file whose data section is `dataLen`
 * bytes: every entry's dtype, shape and offsets checked, overlaps refused.
 */
function parseHeader(json: Uint8Array, dataLen: number, fail: (msg: string) => never) {
  let header: Record<string, unknown> = {};
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(json));
  } catch (e) {
    fail(`header is not valid UTF-8 JSON: ${(e as Error).message}`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header))
    fail('header is not a JSON object');
  const metadata = (header.__metadata__ ?? {}) as Record<string, string>;
  const entries: Entry[] = [];
  for (const [name, raw] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const info = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const kind = FROM_FILE[String(info?.dtype)];
    if (!kind) fail(`tensor '${name}': unknown dtype ${JSON.stringify(info?.dtype)}`);
    const shape = info.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail(`tensor '${name}': shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    }
    const offs = info.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      fail(`tensor '${name}': data_offsets ${JSON.stringify(offs)} is not [begin, end]`);
    }
    const [begin, end] = offs as [number, number];
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    const width = kind === 'bf16' ? 2 : bytesPer(kind as DType);
    if (end < begin || end > dataLen)
      fail(`tensor '${name}': data [${begin}, ${end}) is outside the ${dataLen}-byte data section`);
    if (end - begin !== count * width) {
      fail(
        `tensor '${name}': ${end - begin} bytes for shape [${shape}] of ${info.dtype} (needs ${count * width})`,
      );
    }
    entries.push({ name, kind: kind!, shape: shape as number[], begin, end });
  }
  const spans = [...entries].sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < spans.length; i++) {
    if (spans[i]!.begin < spans[i - 1]!.end)
      fail(`tensors '${spans[i - 1]!.name}' and '${spans[i]!.name}' overlap`);
  }
  return { entries, metadata };
}

/**
 * The tensor of `e`, its bytes put in place by `fill` (offsets in the file need not be aligned to
 * the element size, so the data always lands in a fresh array). BF16 is widened to float32.
 */
function tensorOf(e: Entry, fill: (into: Uint8Array) => void): NamedTensor {
  const count = e.shape.reduce((a, b) => a * b, 1);
  if (e.kind === 'bf16') {
    const bits = new Uint16Array(count);
    fill(new Uint8Array(bits.buffer));
    const out = new Float32Array(count);
    const wide = new Uint32Array(out.buffer);
    for (let i = 0; i < count; i++) wide[i] = bits[i]! << 16;
    return { dtype: 'float32', shape: e.shape, data: out };
  }
  const out = allocate(e.kind, count);
  fill(new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
  return { dtype: e.kind, shape: e.shape, data: out };
}

export function parseSafetensors(
  bytes: Uint8Array,
  source = 'safetensors',
): {
  tensors: Map<string, NamedTensor>;
  metadata: Record<string, string>;
} {
  const fail = (msg: string): never => {
    throw new SafetensorsError(`${source}: ${msg}`);
  };
  if (bytes.byteLength < 8) fail(`file is ${bytes.byteLength} bytes, shorter than the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = view.getBigUint64(0, true);
  if (headerLen > BigInt(bytes.byteLength - 8))
    fail(`header length ${headerLen} runs past the end of the file`);
  const dataStart = 8 + Number(headerLen);
  const { entries, metadata } = parseHeader(bytes.subarray(8, dataStart), bytes.byteLength - dataStart, fail);
  const tensors = new Map<string, NamedTensor>();
  for (const e of entries)
    tensors.set(
      e.name,
      tensorOf(e, (into) => into.set(bytes.subarray(dataStart + e.begin, dataStart + e.end))),
    );
  return { tensors, metadata };
}

/** The most one read or write call moves: Node's fs refuses a length of 2 GiB or more. */
const IO_CHUNK = 1 << 30;

/**
 * A file read tensor by tensor, straight into each tensor's array: no whole-file buffer, so a
 * file of any size loads (a single `readFileSync` stops at 2 GiB, and a checkpoint shard or a
 * session snapshot is often larger), holding each byte once.
 */
export function readSafetensors(path: string) {
  const fail = (msg: string): never => {
    throw new SafetensorsError(`${path}: ${msg}`);
  };
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const readAt = (into: Uint8Array, position: number) => {
      for (let at = 0; at < into.byteLength; ) {
        const n = readSync(fd, into, at, Math.min(IO_CHUNK, into.byteLength - at), position + at);
        if (n === 0) fail(`file ended at byte ${position + at} of ${size}`);
        at += n;
      }
    };
    if (size < 8) fail(`file is ${size} bytes, shorter than the 8-byte header length`);
    const head = new Uint8Array(8);
    readAt(head, 0);
    const headerLen = new DataView(head.buffer).getBigUint64(0, true);
    if (headerLen > BigInt(size - 8)) fail(`header length ${headerLen} runs past the end of the file`);
    const json = new Uint8Array(Number(headerLen));
    readAt(json, 8);
    const dataStart = 8 + json.byteLength;
    const { entries, metadata } = parseHeader(json, size - dataStart, fail);
    const tensors = new Map<string, NamedTensor>();
    for (const e of entries)
      tensors.set(
        e.name,
        tensorOf(e, (into) => readAt(into, dataStart + e.begin)),
      );
    return { tensors, metadata };
  } finally {
    closeSync(fd);
  }
}

/**
 * A tensor to write: a traced dtype, or 'bfloat16' with the raw 16-bit patterns in a Uint16Array
 * (the engine computes in float32; BF16 exists only on disk).
 */
export type StoredTensor = NamedTensor | { dtype: 'bfloat16'; shape: number[]; data: Uint16Array };

/** float32 → bfloat16 bit patterns, rounding to nearest even (NaN stays NaN). */
export function toBfloat16(xs: Float32Array | Float64Array): Uint16Array {
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  return Uint16Array.from(xs, (x) => {
    f[0] = x;
    const bits = u[0]!;
    if (Number.isNaN(x)) return (bits >>> 16) | 0x40;
    return (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
  });
}

/** The file's bytes as parts: the length and header, then each tensor's data as a view (no copy). */
function safetensorsParts(
  tensors: Map<string, StoredTensor>,
  metadata: Record<string, string>,
): Uint8Array[] {
  const names = [...tensors.keys()].sort();
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const name of names) {
    const t = tensors.get(name)!;
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (t.data.length !== count)
      throw new SafetensorsError(`tensor '${name}': ${t.data.length} values for shape [${t.shape}]`);
    header[name] = {
      dtype: t.dtype === 'bfloat16' ? 'BF16' : TO_FILE[t.dtype],
      shape: t.shape,
      data_offsets: [offset, offset + t.data.byteLength],
    };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((Buffer.byteLength(json) + 8) % 8)) % 8); // align the data section to 8 bytes
  const headerBytes = Buffer.from(json);
  const head = new Uint8Array(8 + headerBytes.length);
  new DataView(head.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  head.set(headerBytes, 8);
  return [
    head,
    ...names.map((name) => {
      const d = tensors.get(name)!.data;
      return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
    }),
  ];
}

export function serializeSafetensors(
  tensors: Map<string, StoredTensor>,
  metadata: Record<string, string> = {},
): Uint8Array {
  const parts = safetensorsParts(tensors, metadata);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/**
 * writeSafetensors without blocking the event loop for long: the writes run on libuv's threads
 * and the SHA-256 (what an artifact's manifest records) is taken 4 MiB at a time between them.
 * Resolves to the file's size and digest. Not atomic: write it where nothing reads it yet.
 */
export async function writeSafetensorsAsync(
  path: string,
  tensors: Map<string, StoredTensor>,
  metadata: Record<string, string> = {},
): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash('sha256');
  const file = await open(path, 'w');
  let bytes = 0;
  try {
    for (const part of safetensorsParts(tensors, metadata)) {
      for (let at = 0; at < part.byteLength; at += HASH_CHUNK) {
        const chunk = part.subarray(at, at + HASH_CHUNK);
        hash.update(chunk);
        await file.write(chunk);
      }
      bytes += part.byteLength;
    }
  } finally {
    await file.close();
  }
  return { bytes, sha256: hash.digest('hex') };
}

const HASH_CHUNK = 4 * 1024 * 1024;

/** Writes atomically: a temporary file in the same folder, then a rename over the final name. */
export function writeSafetensors(
  path: string,
  tensors: Map<string, StoredTensor>,
  metadata: Record<string, string> = {},
): void {
  const tmp = `${path}.tmp-${randomBytes(6).toString('hex')}`;
  try {
    // Part by part, each in calls under 2 GiB: the whole file is never one buffer.
    const fd = openSync(tmp, 'w');
    try {
      for (const part of safetensorsParts(tensors, metadata))
        for (let at = 0; at < part.byteLength; )
          at += writeSync(fd, part, at, Math.min(IO_CHUNK, part.byteLength - at));
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}
