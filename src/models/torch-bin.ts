/**
 * A restricted reader of PyTorch's `torch.save(state_dict)` files (`pytorch_model.bin`): a zip
 * (fflate reads it) holding `<name>/data.pkl`, a pickle of an ordered dict of tensors, and
 * `<name>/data/<key>`, each storage's raw little-endian bytes.
 *
 * No library reads this format in JavaScript, and a general unpickler would run whatever the file
 * asks for, so this one interprets only the opcodes torch.save emits and resolves only the globals
 * a state dict needs: `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and the typed
 * storage classes. Any other global (os.system, builtins.eval, …) or an unknown opcode refuses
 * the file, naming it; nothing in it is executed.
 */
import { readFileSync } from 'node:fs';
import { unzipSync } from 'fflate';
import type { NamedTensor } from '../engine/index.js';
import { DuelError } from '../errors.js';

const bad = (file: string, description: string) => DuelError.invalidArgument([{ field: file, description }]);

/** torch's storage classes → how their bytes read. */
const STORAGES: Record<string, { dtype: NamedTensor['dtype'] | 'bfloat16'; bytes: number }> = {
  FloatStorage: { dtype: 'float32', bytes: 4 },
  DoubleStorage: { dtype: 'float64', bytes: 8 },
  HalfStorage: { dtype: 'float16', bytes: 2 },
  BFloat16Storage: { dtype: 'bfloat16', bytes: 2 },
  LongStorage: { dtype: 'int64', bytes: 8 },
  IntStorage: { dtype: 'int32', bytes: 4 },
  BoolStorage: { dtype: 'bool', bytes: 1 },
};

class Global {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
}
class StorageRef {
  constructor(
    readonly kind: string,
    readonly key: string,
    readonly numel: number,
  ) {}
}
class Mark {}
type Value = unknown;

const ALLOWED = new Set([
  'collections.OrderedDict',
  'torch._utils._rebuild_tensor_v2',
  ...Object.keys(STORAGES).map((s) => `torch.${s}`),
]);

/** The tensors of a torch.save'd state dict, by name (BF16 widened to float32). */
export function readTorchStateDict(path: string): Map<string, NamedTensor> {
  let files: Record<string, Uint8Array>;
  try {
    files = unzipSync(readFileSync(path));
  } catch (e) {
    throw bad(
      path,
      `not a torch.save zip archive (${(e as Error).message}); legacy pre-1.6 files are not read`,
    );
  }
  const pkl = Object.keys(files).find((n) => n.endsWith('/data.pkl') && n.split('/').length === 2);
  if (!pkl) throw bad(path, 'holds no <archive>/data.pkl');
  const root = pkl.slice(0, -'data.pkl'.length);
  const storage = (ref: StorageRef): Uint8Array => {
    const bytes = files[`${root}data/${ref.key}`];
    if (!bytes) throw bad(path, `storage '${ref.key}' is missing from the archive`);
    if (bytes.byteLength < ref.numel * STORAGES[ref.kind]!.bytes)
      throw bad(
        path,
        `storage '${ref.key}' holds ${bytes.byteLength} bytes, fewer than its ${ref.numel} elements`,
      );
    return bytes;
  };
  const dict = unpickle(files[pkl]!, path, (ref, offset, size, stride) =>
    tensorOf(path, ref, storage(ref), offset, size, stride),
  );
  if (!(dict instanceof Map)) throw bad(path, 'data.pkl does not hold a dict of tensors');
  const out = new Map<string, NamedTensor>();
  for (const [k, v] of dict) {
    if (typeof k !== 'string' || !isTensor(v)) throw bad(path, `entry ${JSON.stringify(k)} is not a tensor`);
    out.set(k, v);
  }
  return out;
}

const isTensor = (v: unknown): v is NamedTensor =>
  typeof v === 'object' && v !== null && 'dtype' in v && 'shape' in v && 'data' in v;

/** A (possibly strided, offset) view of a storage, copied out contiguous. */
function tensorOf(
  path: string,
  ref: StorageRef,
  bytes: Uint8Array,
  offset: number,
  size: number[],
  stride: number[],
) {
  const kind = STORAGES[ref.kind]!;
  const numel = size.reduce((a, b) => a * b, 1);
  let last = offset;
  for (const [i, d] of size.entries()) if (d > 0) last += (d - 1) * stride[i]!;
  if (numel > 0 && last >= ref.numel) throw bad(path, `a tensor reads past the end of storage '${ref.key}'`);
  const aligned = new Uint8Array(bytes.byteLength);
  aligned.set(bytes);
  const src = {
    float32: () => new Float32Array(aligned.buffer),
    float64: () => new Float64Array(aligned.buffer),
    float16: () => new Uint16Array(aligned.buffer),
    bfloat16: () => new Uint16Array(aligned.buffer),
    int64: () => new BigInt64Array(aligned.buffer),
    int32: () => new Int32Array(aligned.buffer),
    bool: () => new Uint8Array(aligned.buffer),
  }[kind.dtype]();
  const out = new (src.constructor as new (n: number) => typeof src)(numel);
  // Row-major walk over `size`, reading through `stride`.
  const idx = new Array<number>(size.length).fill(0);
  for (let n = 0; n < numel; n++) {
    let at = offset;
    for (let i = 0; i < size.length; i++) at += idx[i]! * stride[i]!;
    (out as unknown as number[])[n] = (src as unknown as number[])[at]!;
    for (let i = size.length - 1; i >= 0; i--) {
      if (++idx[i]! < size[i]!) break;
      idx[i] = 0;
    }
  }
  if (kind.dtype === 'bfloat16') {
    const widened = new Float32Array(numel);
    const u32 = new Uint32Array(widened.buffer);
    for (let i = 0; i < numel; i++) u32[i] = (out as Uint16Array)[i]! << 16;
    return { dtype: 'float32', shape: size, data: widened } as NamedTensor;
  }
  if (kind.dtype === 'float16') return { dtype: 'float16', shape: size, data: out } as NamedTensor;
  return { dtype: kind.dtype, shape: size, data: out } as NamedTensor;
}

/** The opcodes torch.save (pickle protocol 2, and 3–5 framing) uses; anything else is refused. */
function unpickle(
  bytes: Uint8Array,
  path: string,
  rebuild: (ref: StorageRef, offset: number, size: number[], stride: number[]) => NamedTensor,
): Value {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const text = new TextDecoder();
  const stack: Value[] = [];
  const memo = new Map<number, Value>();
  let pos = 0;
  const fail = (what: string): never => {
    throw bad(path, `data.pkl at byte ${pos}: ${what}`);
  };
  const u8 = () => (pos < bytes.length ? bytes[pos++]! : fail('ends early'));
  /** Moves past `n` bytes; where they started. */
  const skip = (n: number) => {
    if (pos + n > bytes.length) fail('ends early');
    pos += n;
    return pos - n;
  };
  const take = (n: number) => bytes.subarray(skip(n), pos);
  const u32 = () => view.getUint32(skip(4), true);
  const line = () => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0) fail('unterminated line');
    const s = text.decode(bytes.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const popMark = (): Value[] => {
    const at = stack.findLastIndex((v) => v instanceof Mark);
    if (at < 0) fail('no MARK on the stack');
    return stack.splice(at).slice(1);
  };
  const global = (module: string, name: string) => {
    if (!ALLOWED.has(`${module}.${name}`))
      fail(`refuses global ${module}.${name} (a state dict needs only tensors and ordered dicts)`);
    return new Global(module, name);
  };
  const call = (fn: Value, args: Value): Value => {
    if (!(fn instanceof Global) || !Array.isArray(args))
      return fail('REDUCE of something that is not an allowed global');
    if (fn.name === 'OrderedDict') return new Map();
    if (fn.name === '_rebuild_tensor_v2') {
      const [ref, offset, size, stride] = args as [StorageRef, number, number[], number[]];
      if (!(ref instanceof StorageRef)) return fail('_rebuild_tensor_v2 without a storage');
      return rebuild(ref, offset, size, stride);
    }
    return fail(`${fn.module}.${fn.name} cannot be called`);
  };
  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        u8();
        break;
      case 0x95: // FRAME
        take(8);
        break;
      case 0x2e: // STOP
        return stack.pop();
      case 0x28: // MARK
        stack.push(new Mark());
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push([]);
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(view.getUint16(skip(2), true));
        break;
      case 0x4a: // BININT
        stack.push(view.getInt32(skip(4), true));
        break;
      case 0x8a: {
        // LONG1: little-endian two's complement of n bytes
        const n = u8();
        const b = take(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
        if (n > 0 && b[n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
        stack.push(Number(v));
        break;
      }
      case 0x47: // BINFLOAT (big-endian)
        stack.push(view.getFloat64(skip(8), false));
        break;
      case 0x58: // BINUNICODE
        stack.push(text.decode(take(u32())));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(text.decode(take(u8())));
        break;
      case 0x63: {
        // GLOBAL "module\nname\n"
        const module = line();
        stack.push(global(module, line()));
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = stack.pop();
        const module = stack.pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL without two strings');
        stack.push(global(module as string, name as string));
        break;
      }
      case 0x71: // BINPUT
        memo.set(u8(), stack.at(-1));
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), stack.at(-1));
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, stack.at(-1));
        break;
      case 0x68: // BINGET
        stack.push(memo.get(u8()));
        break;
      case 0x6a: // LONG_BINGET
        stack.push(memo.get(u32()));
        break;
      case 0x74: // TUPLE
        stack.push(popMark());
        break;
      case 0x85: // TUPLE1
        stack.push([stack.pop()]);
        break;
      case 0x86: {
        // TUPLE2
        const b = stack.pop();
        stack.push([stack.pop(), b]);
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = stack.pop();
        const b = stack.pop();
        stack.push([stack.pop(), b, c]);
        break;
      }
      case 0x61: {
        // APPEND
        const v = stack.pop();
        (stack.at(-1) as Value[]).push(v);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark();
        (stack.at(-1) as Value[]).push(...items);
        break;
      }
      case 0x73: {
        // SETITEM
        const v = stack.pop();
        const k = stack.pop();
        const d = stack.at(-1);
        if (!(d instanceof Map)) fail('SETITEM on something that is not a dict');
        (d as Map<Value, Value>).set(k, v);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark();
        const d = stack.at(-1);
        if (!(d instanceof Map)) fail('SETITEMS on something that is not a dict');
        for (let i = 0; i + 1 < items.length; i += 2) (d as Map<Value, Value>).set(items[i], items[i + 1]);
        break;
      }
      case 0x51: {
        // BINPERSID: ('storage', StorageClass, key, location, numel)
        const pid = stack.pop();
        if (!Array.isArray(pid) || pid[0] !== 'storage' || !(pid[1] instanceof Global))
          fail('a persistent id that is not a storage');
        const [, kind, key, , numel] = pid as [string, Global, string, string, number];
        if (!STORAGES[kind.name]) fail(`unknown storage ${kind.name}`);
        stack.push(new StorageRef(kind.name, String(key), Number(numel)));
        break;
      }
      case 0x52: {
        // REDUCE
        const args = stack.pop();
        stack.push(call(stack.pop(), args));
        break;
      }
      case 0x62: // BUILD: a state dict's `_metadata` attribute; it carries no tensors
        stack.pop();
        break;
      default:
        fail(`refuses opcode 0x${op.toString(16)} (not one torch.save writes for a state dict)`);
    }
  }
}
