/** Messages between the main thread and a session worker. Tensors travel as plain typed arrays. */
import type { DType, TypedArray } from '../dtype.js';

export interface WireTensor {
  dtype: DType;
  dims: number[];
  data: TypedArray;
}

/** ONNX Runtime execution providers duel configures; webgpu is the tested GPU path. */
export const PROVIDERS = ['cpu', 'webgpu', 'cuda'] as const;

/** The element types a runtime computes in, where a graph offers the choice (ComputeDtype). */
export const COMPUTE_DTYPES = ['float32', 'float16'] as const;
export type ComputeDtype = (typeof COMPUTE_DTYPES)[number];
export type Provider = (typeof PROVIDERS)[number];

export interface SessionOptions {
  provider: Provider;
  /** Threads for one op; 0 lets ONNX Runtime decide. */
  intraOpThreads: number;
  /**
   * Every output stays in device memory when the provider has its own (webgpu), for a session
   * whose state binding writes outputs back run after run (parameters, optimizer slots, a KV
   * cache); what a run fetches is copied back to the host. Ignored on cpu.
   */
  outputsOnDevice?: boolean;
  /**
   * With `outputsOnDevice`: where each output goes, when some go to host memory (what every run
   * reads: a loss, drawn tokens), so no second run copies them back after the device finished.
   */
  outputLocations?: Record<string, 'host' | 'device'>;
  /**
   * No per-session memory arena and no memory pattern on the CPU: a session returns its
   * activations' memory after each run instead of keeping its peak (what many sessions in one
   * process need; each run allocates afresh: no consistent cost in step time, BENCHMARKS.md).
   */
  lowMemory?: boolean;
  /** Profile every run (per node: provider and time) into a file whose path starts with this. */
  profilePrefix?: string;
}

/**
 * A run that reads some inputs from, and writes some outputs back to, a named state kept in the
 * worker (parameters, optimizer slots), so they never cross the thread boundary between steps.
 */
export interface StateBinding {
  state: string;
  /** graph input name → state key */
  reads: Record<string, string>;
  /** graph output name → state key */
  writes: Record<string, string>;
  /** Inputs read from another state of the worker that many runs share and none writes. */
  shared?: { state: string; reads: Record<string, string> };
  /**
   * Outputs of `writes` that the run may write into the buffer of the state tensor they replace
   * (host memory only). The caller vouches that each is the elementwise last use of that tensor
   * as an input (an update `p ← where(finite, p − Δ, p)` in a graph nothing else reads p in, an
   * accumulation `a ← a + g`), so writing over it as it is read is safe, and the state's memory
   * is not allocated afresh every step. A tensor another state
   * still holds (a pinned snapshot) is never written over: that output gets a fresh buffer.
   */
  inPlace?: string[];
  /**
   * State keys set to zeros once the run is done (gradient sums an optimizer step has consumed):
   * filled in place where nothing else holds the tensor, else replaced by a zeroed one. Host
   * memory only: a graph that resets device state outputs the zeros instead.
   */
  zero?: string[];
}

/**
 * Bytes one run moved between host and device memory, as the worker sees them: every input that
 * was host memory (the request's feeds, state not yet on the device) and every output fetched;
 * on cuda, whose state stays in host memory, every input and every output (the state's new
 * values too: what folding steps into one run divides). Copies ONNX Runtime makes inside the
 * graph, around nodes it placed on the CPU, are not counted here: `duel bench placement` lists
 * those nodes. Zero on the cpu provider.
 */
export interface Moved {
  toDevice: number;
  toHost: number;
  /**
   * Fetched outputs that were still in device memory after the run, each copied back by a run of
   * its own that waits for the device (a session's `hostOutputs` avoid them).
   */
  readBacks: number;
}

/** What a worker holds in device memory. */
export interface DeviceStats {
  tensors: number;
  bytes: number;
}

export type Request =
  | { op: 'create'; bytes: Uint8Array; options: SessionOptions }
  | { op: 'run'; session: number; feeds: Record<string, WireTensor>; fetch: string[]; binding?: StateBinding }
  | { op: 'release'; session: number }
  /** Writes the profile of every profiled session in the worker. */
  | { op: 'endProfiling' }
  /** `session`: the session whose provider decides where the tensors live. */
  | { op: 'setState'; session: number; state: string; tensors: Record<string, WireTensor> }
  /**
   * `transfer`: hand over the buffers of the tensors no other state holds (a pinned snapshot whose
   * state has moved on) instead of copying them; they leave the worker.
   */
  | { op: 'getState'; state: string; keys: string[]; transfer?: boolean }
  /**
   * Holds the tensors `keys` of `state` under `as` as they are now, without a copy: runs replace a
   * state's tensors with fresh outputs, so the pinned ones stay as they were. Device tensors are
   * read back to the host instead (a device state's old tensors are freed when replaced).
   */
  | { op: 'pinState'; state: string; keys: string[]; as: string }
  | { op: 'dropState'; state: string; keys?: string[] }
  | { op: 'stats' };

export type Reply =
  | {
      ok: true;
      session?: number;
      inputNames?: string[];
      outputNames?: string[];
      tensors?: Record<string, WireTensor>;
      moved?: Moved;
      device?: DeviceStats;
    }
  | { ok: false; error: string };
