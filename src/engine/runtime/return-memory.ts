/**
 * Gives freed heap pages back to the system after a run of a low-memory session. Without ONNX
 * Runtime's arena (SessionOptions.lowMemory) every run allocates its activations afresh and frees
 * them; glibc keeps freed chunks in its arenas (one per thread that allocates) and trims only the
 * top of the main heap, so a training process grows to several times its state (BENCHMARKS.md,
 * `bench session-probe`). glibc's `malloc_trim(0)` hands every wholly free page of every arena
 * back (madvise), in milliseconds (≈7 ms for a 21.9M training session's heap). Node has no
 * binding to it, so koffi, a maintained FFI library, calls it; where the C library has none
 * (musl, macOS) this does nothing. DUEL_MALLOC_TRIM=0 turns it off (the benchmark's peer).
 */
import { createRequire } from 'node:module';

type Trim = (pad: number) => number;

let trim: Trim | null | undefined;

function load(): Trim | null {
  if (process.env.DUEL_MALLOC_TRIM === '0' || process.platform !== 'linux') return null;
  try {
    // koffi is CommonJS with a native addon: required, not bundled (scripts/bundle.mjs).
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    return koffi.load('libc.so.6').func('int malloc_trim(size_t pad)') as Trim;
  } catch {
    // No glibc (a musl image), or no koffi build for this machine: the memory stays with the process.
    return null;
  }
}

/**
 * How long a worker must have run nothing before it trims. A trim itself takes milliseconds, but
 * the pages it returns are the ones the next run's activations would have reused: trimmed after
 * every run, a 21.9M full-weight step ran 10% slower (the next run faults fresh pages in), so
 * memory goes back when a worker falls quiet (a session waiting for its client, a round done),
 * not between the back-to-back runs of a busy training loop.
 */
const IDLE_MS = 250;
let pending: NodeJS.Timeout | undefined;

/** Trims once this thread has run nothing for IDLE_MS; each call moves that moment later. */
export function returnFreedMemoryWhenIdle(): void {
  trim ??= load();
  if (!trim) return;
  clearTimeout(pending);
  pending = setTimeout(() => trim?.(0), IDLE_MS);
  pending.unref();
}

/** Returns free heap pages to the system now; false where this process cannot (see the header). */
export function returnFreedMemory(): boolean {
  trim ??= load();
  if (!trim) return false;
  trim(0);
  return true;
}
