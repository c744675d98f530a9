/**
 * A session worker: owns ONNX Runtime sessions and named states. session.run blocks its thread,
 * which is why it runs here and not on the event loop that answers gRPC and health checks.
 */
import { parentPort } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import type { DType } from '../dtype.js';
import type { Reply, Request, SessionOptions, WireTensor } from './protocol.js';

const sessions = new Map<number, ort.InferenceSession>();
const states = new Map<string, Map<string, ort.Tensor>>();
let nextSession = 1;

const ORT_TYPE: Record<DType, ort.Tensor.Type> = {
  float32: 'float32',
  float64: 'float64',
  float16: 'float16',
  int64: 'int64',
  int32: 'int32',
  bool: 'bool',
};

function toOrt(t: WireTensor): ort.Tensor {
  return new ort.Tensor(ORT_TYPE[t.dtype], t.data as never, t.dims);
}

function toWire(t: ort.Tensor): WireTensor {
  return { dtype: t.type as DType, dims: [...t.dims], data: t.data as WireTensor['data'] };
}

async function createSession(bytes: Uint8Array, options: SessionOptions): Promise<ort.InferenceSession> {
  const missing = (why: string) =>
    new Error(
      `execution provider '${options.provider}' is not available: ${why}. For cuda, install onnxruntime-node ` +
        'with ONNXRUNTIME_NODE_INSTALL=cuda12 on a machine with CUDA 12 and cuDNN 9 (the GPU image does this); ' +
        "'cpu' always works",
    );
  const listed = ort.listSupportedBackends().map((b) => b.name);
  if (!listed.includes(options.provider)) throw missing(`this build offers ${listed.join(', ')}`);
  try {
    return await ort.InferenceSession.create(bytes, {
      executionProviders: [options.provider],
      intraOpNumThreads: options.intraOpThreads,
      interOpNumThreads: 1,
      graphOptimizationLevel: 'all',
    });
  } catch (error) {
    // The binding lists providers it was compiled with; their libraries may still be absent.
    if (options.provider !== 'cpu') throw missing((error as Error).message.split('\n')[0]!);
    throw error;
  }
}

function stateOf(name: string): Map<string, ort.Tensor> {
  let s = states.get(name);
  if (!s) {
    s = new Map();
    states.set(name, s);
  }
  return s;
}

async function handle(req: Request): Promise<Reply> {
  switch (req.op) {
    case 'create': {
      const session = await createSession(req.bytes, req.options);
      const id = nextSession++;
      sessions.set(id, session);
      return {
        ok: true,
        session: id,
        inputNames: [...session.inputNames],
        outputNames: [...session.outputNames],
      };
    }
    case 'run': {
      const session = sessions.get(req.session);
      if (!session) throw new Error(`no session ${req.session} in this worker`);
      const feeds: Record<string, ort.Tensor> = {};
      for (const [name, t] of Object.entries(req.feeds)) feeds[name] = toOrt(t);
      const fetch = new Set(req.fetch);
      if (req.binding) {
        const state = stateOf(req.binding.state);
        for (const [input, key] of Object.entries(req.binding.reads)) {
          const t = state.get(key);
          if (!t) throw new Error(`state '${req.binding.state}' has no tensor '${key}' for input '${input}'`);
          feeds[input] = t;
        }
        for (const output of Object.keys(req.binding.writes)) fetch.add(output);
      }
      const out = await session.run(feeds, [...fetch]);
      if (req.binding) {
        const state = stateOf(req.binding.state);
        for (const [output, key] of Object.entries(req.binding.writes)) state.set(key, out[output]!);
      }
      const tensors: Record<string, WireTensor> = {};
      for (const name of req.fetch) tensors[name] = toWire(out[name]!);
      return { ok: true, tensors };
    }
    case 'release':
      await sessions.get(req.session)?.release();
      sessions.delete(req.session);
      return { ok: true };
    case 'setState': {
      const state = stateOf(req.state);
      for (const [key, t] of Object.entries(req.tensors)) state.set(key, toOrt(t));
      return { ok: true };
    }
    case 'getState': {
      const state = stateOf(req.state);
      const tensors: Record<string, WireTensor> = {};
      for (const key of req.keys) {
        const t = state.get(key);
        if (!t) throw new Error(`state '${req.state}' has no tensor '${key}'`);
        tensors[key] = toWire(t);
      }
      return { ok: true, tensors };
    }
    case 'dropState':
      if (req.keys) for (const key of req.keys) states.get(req.state)?.delete(key);
      else states.delete(req.state);
      return { ok: true };
  }
}

parentPort!.on('message', ({ id, req }: { id: number; req: Request }) => {
  handle(req).then(
    (reply) => parentPort!.postMessage({ id, reply }),
    (error: unknown) =>
      parentPort!.postMessage({
        id,
        reply: { ok: false, error: error instanceof Error ? error.message : String(error) },
      }),
  );
});

// The native binding is loaded by now: terminating a worker before this point (while
// onnxruntime-node initialises) aborts the whole process, so the pool waits for this message.
parentPort!.postMessage({ ready: true });
