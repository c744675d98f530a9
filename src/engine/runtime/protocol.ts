/** Messages between the main thread and a session worker. Tensors travel as plain typed arrays. */
import type { DType, TypedArray } from '../dtype.js';

export interface WireTensor {
  dtype: DType;
  dims: number[];
  data: TypedArray;
}

export type Provider = 'cpu' | 'cuda' | 'webgpu';

export interface SessionOptions {
  provider: Provider;
  /** Threads for one op; 0 lets ONNX Runtime decide. */
  intraOpThreads: number;
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
}

export type Request =
  | { op: 'create'; bytes: Uint8Array; options: SessionOptions }
  | { op: 'run'; session: number; feeds: Record<string, WireTensor>; fetch: string[]; binding?: StateBinding }
  | { op: 'release'; session: number }
  | { op: 'setState'; state: string; tensors: Record<string, WireTensor> }
  | { op: 'getState'; state: string; keys: string[] }
  | { op: 'dropState'; state: string; keys?: string[] };

export type Reply =
  | {
      ok: true;
      session?: number;
      inputNames?: string[];
      outputNames?: string[];
      tensors?: Record<string, WireTensor>;
    }
  | { ok: false; error: string };
