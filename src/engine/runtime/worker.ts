/**
 * A session worker: owns ONNX Runtime sessions and named states. session.run blocks its thread,
 * which is why it runs here and not on the event loop that answers gRPC and health checks.
 *
 * On the webgpu provider a state lives in device memory: what `setState` stores is moved onto
 * the device once, a session that writes state back keeps its outputs on the device
 * (`outputsOnDevice`), and a replaced or dropped device tensor is freed at once rather than when
 * the garbage collector gets to it, so memory stays flat however many steps run. A replaced or
 * dropped host tensor is freed at once too where Node can detach its buffer (`letGo`,
 * free-host.ts). What every run reads on the host (a loss, drawn tokens: `outputLocations`) the run writes to host memory itself;
 * any other fetched device output is copied back by a small session of its own (a read-back).
 *
 * Such a session fetches every output on every run. onnxruntime-node 1.30 binds the outputs of
 * a session with `preferredOutputLocation` once and keeps them bound: a run that fetches fewer
 * outputs than the one before fails ("Output count mismatch"), and so does one whose outputs
 * change shape unless all are fetched (test/engine/webgpu.test.ts shows the workaround holds).
 */
import { createRequire } from 'node:module';
import { parentPort, workerData } from 'node:worker_threads';
import type * as Ort from 'onnxruntime-node';
import { bytesPer, type DType } from '../dtype.js';
import { Graph } from '../graph.js';
import { compile } from '../onnx.js';
import { stopGradient } from '../ops/elementwise.js';
import { freeHostData } from './free-host.js';
import type {
  DeviceStats,
  Moved,
  Reply,
  Request,
  SessionOptions,
  StateBinding,
  WireTensor,
} from './protocol.js';
import { returnFreedMemoryWhenIdle } from './return-memory.js';

/**
 * ONNX Runtime's Node binding: the installed onnxruntime-node, or the package the Runtime names
 * (the cuda provider's matching core, RuntimeOptions.onnxruntimeNode). Required, not imported,
 * so that which one is a choice made when the worker starts.
 */
const ort: typeof Ort = createRequire(import.meta.url)(
  (workerData as { onnxruntimeNode?: string } | null)?.onnxruntimeNode ?? 'onnxruntime-node',
);

interface Loaded {
  session: Ort.InferenceSession;
  /** Every output stays on the device and every run fetches all of them (see the header). */
  outputsOnDevice: boolean;
  profiled: boolean;
  /**
   * Whether its tensors can live in device memory of its own: webgpu only. cuda would too, but
   * it cannot be tested on any machine of this project, so its state stays in host memory.
   */
  device: boolean;
  /**
   * Whether every input and output crosses between host and device at each run: cuda's, whose
   * state stays in host memory here (Node's binding has no CUDA device tensors).
   */
  crosses: boolean;
  /** Created with SessionOptions.lowMemory: its runs' freed memory goes back to the system. */
  lowMemory: boolean;
}

const sessions = new Map<number, Loaded>();
const states = new Map<string, Map<string, Ort.Tensor>>();
let nextSession = 1;

const ORT_TYPE: Record<DType, Ort.Tensor.Type> = {
  float32: 'float32',
  float64: 'float64',
  float16: 'float16',
  int64: 'int64',
  int32: 'int32',
  bool: 'bool',
};

/** Only float state goes to the device: WebGPU has no 64-bit integers, and ids are fed per run. */
const DEVICE_TYPES = new Set<Ort.Tensor.Type>(['float32', 'float16']);

/**
 * float16 data crosses as the raw bits in a Uint16Array. Where the JavaScript engine has
 * Float16Array (Node 24), onnxruntime-common wraps such data in a Float16Array view, which
 * onnxruntime-node 1.30's binding reads as empty ("not enough space: expected N, got 0"): the
 * tensor is given its Uint16Array back, as on Node 20, and a Float16Array read back is viewed as
 * its bits again.
 */
function toOrt(t: WireTensor): Ort.Tensor {
  const tensor = new ort.Tensor(ORT_TYPE[t.dtype], t.data as never, t.dims);
  if (t.dtype === 'float16' && !(tensor.data instanceof Uint16Array))
    (tensor as unknown as { cpuData: Uint16Array }).cpuData = t.data as Uint16Array;
  return tensor;
}

function toWire(t: Ort.Tensor): WireTensor {
  const data = t.data as WireTensor['data'] | ArrayBufferView;
  const bits =
    t.type === 'float16' && !(data instanceof Uint16Array)
      ? new Uint16Array(data.buffer, data.byteOffset, data.byteLength / 2)
      : data;
  return { dtype: t.type as DType, dims: [...t.dims], data: bits as WireTensor['data'] };
}

const onDevice = (t: Ort.Tensor) => t.location === 'gpu-buffer';

/**
 * A run's output as state that later runs feed back in: a host float16 output is wrapped in a
 * Float16Array on Node 24, which the binding would read as empty (toOrt), so it gets its bits
 * back (a view, no copy). A KV cache on the cpu provider in float16 is such state.
 */
const asState = (t: Ort.Tensor): Ort.Tensor =>
  t.type === 'float16' && !onDevice(t) && !(t.data instanceof Uint16Array) ? toOrt(toWire(t)) : t;

const byteSize = (t: Ort.Tensor) => t.size * bytesPer(t.type as DType);

/**
 * Runs that have read their feeds and not yet finished. onnxruntime-node starts a run from
 * setImmediate, so a message handled meanwhile may drop a state such a run reads: what is let go
 * then waits (`waiting`) until no run is in flight.
 */
let running = 0;
const waiting: Ort.Tensor[] = [];

function freeNow(t: Ort.Tensor): void {
  if (onDevice(t)) t.dispose();
  else freeHostData(t.data as ArrayBufferView);
}

/**
 * Lets go of tensors a state has just replaced or dropped, and outputs no state keeps: device
 * memory is freed and host buffers released now (once no run is in flight), except a tensor some
 * state still holds (a pinned snapshot, a shared base). Call it once the states are updated.
 */
function letGo(dropped: Iterable<Ort.Tensor | undefined>): void {
  let held: Set<Ort.Tensor> | undefined;
  for (const t of dropped) {
    if (!t) continue;
    held ??= heldElsewhere();
    if (held.has(t)) continue;
    if (running > 0) waiting.push(t);
    else freeNow(t);
  }
}

/** Frees what waited for the runs in flight, once the last has finished. */
function afterRuns(): void {
  if (running > 0 || waiting.length === 0) return;
  const held = heldElsewhere();
  for (const t of waiting.splice(0)) if (!held.has(t)) freeNow(t);
}

const VALIDATION_MODES = ['disabled', 'wgpuOnly', 'basic', 'full'] as const;

/**
 * The webgpu provider as every session of this process asks for it: ONNX Runtime makes one WebGPU
 * device per process, with the options of the first session that needs it, so the movers and the
 * sessions must agree. DUEL_WEBGPU_VALIDATION sets how much of each dispatch Dawn and ONNX Runtime
 * check (ONNX Runtime's default 'basic'; 'disabled' trades an error message for a crash when a
 * kernel is wrong; BENCHMARKS.md has what it saves per node).
 */
function webgpuProvider(): Ort.InferenceSession.WebGpuExecutionProviderOption {
  const mode = process.env.DUEL_WEBGPU_VALIDATION ?? 'basic';
  if (!(VALIDATION_MODES as readonly string[]).includes(mode))
    throw new Error(`DUEL_WEBGPU_VALIDATION: must be one of ${VALIDATION_MODES.join(', ')}, got '${mode}'`);
  return { name: 'webgpu', validationMode: mode as (typeof VALIDATION_MODES)[number] };
}

/**
 * Identity graphs on the webgpu provider that move a tensor onto the device or back to the host,
 * one per dtype, rank and direction. ONNX Runtime's Node binding has no other way to make a device tensor
 * from host memory, and `getData()` on a device tensor aborted the process when tried.
 */
const movers = new Map<string, Promise<Ort.InferenceSession>>();

function mover(type: Ort.Tensor.Type, rank: number, to: 'gpu-buffer' | 'cpu') {
  const key = `${type}:${rank}:${to}`;
  let s = movers.get(key);
  if (!s) {
    const g = new Graph();
    const x = g.input(
      'x',
      type as DType,
      Array.from({ length: rank }, (_, i) => `d${i}`),
    );
    s = ort.InferenceSession.create(compile(g, { y: stopGradient(x) }, 'move').bytes, {
      executionProviders: [webgpuProvider()],
      preferredOutputLocation: to,
      logSeverityLevel: 3,
    });
    movers.set(key, s);
  }
  return s;
}

async function toDevice(t: Ort.Tensor): Promise<Ort.Tensor> {
  if (onDevice(t) || t.size === 0 || !DEVICE_TYPES.has(t.type)) return t;
  const s = await mover(t.type, t.dims.length, 'gpu-buffer');
  return (await s.run({ x: t })).y!;
}

async function toHost(t: Ort.Tensor): Promise<Ort.Tensor> {
  if (!onDevice(t)) return t;
  const s = await mover(t.type, t.dims.length, 'cpu');
  return (await s.run({ x: t })).y!;
}

/** Where the outputs of a session that keeps them on the device go: all there, or as listed. */
function outputLocations(
  options: SessionOptions,
): Ort.InferenceSession.SessionOptions['preferredOutputLocation'] {
  const listed = options.outputLocations;
  if (!listed) return 'gpu-buffer';
  return Object.fromEntries(
    Object.entries(listed).map(([n, at]) => [n, at === 'host' ? 'cpu' : 'gpu-buffer']),
  );
}

async function createSession(bytes: Uint8Array, options: SessionOptions): Promise<Ort.InferenceSession> {
  const missing = (why: string) =>
    new Error(
      `execution provider '${options.provider}' is not available: ${why}. For webgpu, install a Vulkan ` +
        'driver (Debian 12: mesa-vulkan-drivers from bookworm-backports; NVIDIA: the driver with the ' +
        "graphics capability, docs/DEPLOY.md); for cuda, bash scripts/setup.sh --cuda (ONNX Runtime 1.29's CUDA 13 provider from the npm registry) on a machine with CUDA 13's libraries, and duel doctor names what is missing; 'cpu' always works",
    );
  const listed = ort.listSupportedBackends().map((b) => b.name);
  if (!listed.includes(options.provider)) throw missing(`this build offers ${listed.join(', ')}`);
  const device = options.provider === 'webgpu';
  const provider = device ? webgpuProvider() : options.provider;
  try {
    return await ort.InferenceSession.create(bytes, {
      executionProviders: [provider],
      intraOpNumThreads: options.intraOpThreads,
      interOpNumThreads: 1,
      graphOptimizationLevel: 'all',
      ...(options.lowMemory ? { enableCpuMemArena: false, enableMemPattern: false } : {}),
      ...(device && options.outputsOnDevice ? { preferredOutputLocation: outputLocations(options) } : {}),
      // Nodes left on the CPU are reported by `duel bench placement`, not as a warning per session.
      ...(device ? { logSeverityLevel: 3 as const } : {}),
      ...(options.profilePrefix
        ? { enableProfiling: true, profileFilePrefix: `${options.profilePrefix}-${nextSession}` }
        : {}),
    });
  } catch (error) {
    // The binding lists providers it was compiled with; their libraries or a driver may be absent.
    if (options.provider !== 'cpu') throw missing((error as Error).message.split('\n')[0]!);
    throw error;
  }
}

function stateOf(name: string): Map<string, Ort.Tensor> {
  let s = states.get(name);
  if (!s) {
    s = new Map();
    states.set(name, s);
  }
  return s;
}

/**
 * The binding's in-place outputs whose state tensors nothing else holds (StateBinding.inPlace):
 * output name → the tensor to write into.
 */
function inPlaceOutputs(b: StateBinding): Record<string, Ort.Tensor> {
  const state = stateOf(b.state);
  const held = heldElsewhere(b.state);
  const into: Record<string, Ort.Tensor> = {};
  for (const output of b.inPlace ?? []) {
    const t = state.get(b.writes[output] ?? '');
    if (t && !onDevice(t) && !held.has(t)) into[output] = t;
  }
  return into;
}

/**
 * Sets state tensors `keys` to zeros (StateBinding.zero): their own buffer where no other state
 * holds it (a pinned snapshot), so a step allocates nothing for them; else a fresh zeroed one.
 */
function zeroState(name: string, keys: readonly string[]): void {
  const state = stateOf(name);
  const held = heldElsewhere(name);
  for (const key of keys) {
    const t = state.get(key);
    if (!t) throw new Error(`state ${name} has no '${key}' to zero`);
    if (onDevice(t))
      throw new Error(`state ${name}: '${key}' is on the device; a graph must output its zeros`);
    const data = t.data as Float32Array;
    if (!held.has(t)) data.fill(0);
    else {
      const zeros = new (data.constructor as Float32ArrayConstructor)(data.length);
      state.set(key, new ort.Tensor(t.type as 'float32', zeros, t.dims));
    }
  }
}

/** Every tensor some state other than `except` holds (every state's, without one). */
function heldElsewhere(except?: string): Set<Ort.Tensor> {
  const held = new Set<Ort.Tensor>();
  for (const [name, s] of states) if (name !== except) for (const t of s.values()) held.add(t);
  return held;
}

function loaded(id: number): Loaded {
  const l = sessions.get(id);
  if (!l) throw new Error(`no session ${id} in this worker`);
  return l;
}

function deviceStats(): DeviceStats {
  let tensors = 0;
  let bytes = 0;
  for (const s of states.values())
    for (const t of s.values())
      if (onDevice(t)) {
        tensors++;
        bytes += byteSize(t);
      }
  return { tensors, bytes };
}

async function handle(req: Request): Promise<Reply & { transfer?: ArrayBuffer[] }> {
  switch (req.op) {
    case 'create': {
      const session = await createSession(req.bytes, req.options);
      const id = nextSession++;
      const device = req.options.provider === 'webgpu';
      sessions.set(id, {
        session,
        device,
        crosses: req.options.provider === 'cuda',
        outputsOnDevice: device && Boolean(req.options.outputsOnDevice),
        profiled: Boolean(req.options.profilePrefix),
        lowMemory: Boolean(req.options.lowMemory),
      });
      return {
        ok: true,
        session: id,
        inputNames: [...session.inputNames],
        outputNames: [...session.outputNames],
      };
    }
    case 'run': {
      const { session, device, crosses, outputsOnDevice, lowMemory } = loaded(req.session);
      const feeds: Record<string, Ort.Tensor> = {};
      for (const [name, t] of Object.entries(req.feeds)) feeds[name] = toOrt(t);
      const fetch = new Set(req.fetch);
      if (req.binding) {
        const sources = [req.binding, ...(req.binding.shared ? [req.binding.shared] : [])];
        for (const { state: name, reads } of sources) {
          const state = stateOf(name);
          for (const [input, key] of Object.entries(reads)) {
            const t = state.get(key);
            if (!t) throw new Error(`state '${name}' has no tensor '${key}' for input '${input}'`);
            feeds[input] = t;
          }
        }
        for (const output of Object.keys(req.binding.writes)) fetch.add(output);
      }
      const moved: Moved = { toDevice: 0, toHost: 0, readBacks: 0 };
      if (device || crosses)
        for (const t of Object.values(feeds)) if (!onDevice(t)) moved.toDevice += byteSize(t);
      const names = outputsOnDevice ? [...session.outputNames] : [...fetch];
      const into = req.binding?.inPlace?.length && !device ? inPlaceOutputs(req.binding) : {};
      running++;
      let out: Ort.InferenceSession.ReturnType;
      try {
        out = await session.run(
          feeds,
          Object.keys(into).length ? Object.fromEntries(names.map((n) => [n, into[n] ?? null])) : names,
        );
      } finally {
        running--;
        afterRuns();
      }
      // On cuda every output came back from the device, the state's new values too.
      if (crosses) for (const t of Object.values(out)) moved.toHost += byteSize(t);
      if (req.binding) {
        const state = stateOf(req.binding.state);
        const fetched = new Set(req.fetch);
        const replaced: Ort.Tensor[] = [];
        for (const [output, key] of Object.entries(req.binding.writes)) {
          // Written into the state's own buffer: that tensor stays. onnxruntime-node (1.30 and
          // 1.31) hands a pre-allocated output back as a copy of what it wrote, which goes now.
          if (into[output]) {
            if (!fetched.has(output)) freeHostData(out[output]!.data as ArrayBufferView);
            continue;
          }
          const old = state.get(key);
          if (old) replaced.push(old);
          state.set(key, asState(out[output]!));
        }
        letGo(replaced);
        if (req.binding.zero?.length) zeroState(req.binding.state, req.binding.zero);
      }
      const tensors: Record<string, WireTensor> = {};
      for (const name of req.fetch) {
        if (onDevice(out[name]!)) moved.readBacks++;
        const host = await toHost(out[name]!);
        if (device) moved.toHost += byteSize(host);
        tensors[name] = toWire(host);
      }
      // Device outputs no state keeps (fetched and read back, or computed only because every
      // output is fetched): freed now.
      const kept = new Set(Object.keys(req.binding?.writes ?? {}));
      letGo(Object.entries(out).flatMap(([name, t]) => (!kept.has(name) && onDevice(t) ? [t] : [])));
      // The run's activations are freed by now (no arena); the allocator would keep their pages.
      if (lowMemory) returnFreedMemoryWhenIdle();
      return { ok: true, tensors, moved };
    }
    case 'release':
      await sessions.get(req.session)?.session.release();
      sessions.delete(req.session);
      return { ok: true };
    case 'endProfiling':
      for (const { session, profiled } of sessions.values()) if (profiled) session.endProfiling();
      return { ok: true };
    case 'setState': {
      const { device } = loaded(req.session);
      const state = stateOf(req.state);
      const replaced: (Ort.Tensor | undefined)[] = [];
      for (const [key, t] of Object.entries(req.tensors)) {
        replaced.push(state.get(key));
        state.set(key, device ? await toDevice(toOrt(t)) : toOrt(t));
      }
      letGo(replaced);
      return { ok: true };
    }
    case 'getState': {
      const state = stateOf(req.state);
      const tensors: Record<string, WireTensor> = {};
      const transfer: ArrayBuffer[] = [];
      const held = req.transfer ? heldElsewhere(req.state) : undefined;
      for (const key of req.keys) {
        const t = state.get(key);
        if (!t) throw new Error(`state '${req.state}' has no tensor '${key}'`);
        const host = await toHost(t);
        const data = host.data as WireTensor['data'];
        // Whole, unshared buffers only: what another state still reads must stay here.
        if (held && !held.has(t) && data.byteOffset === 0 && data.buffer.byteLength === data.byteLength) {
          transfer.push(data.buffer as ArrayBuffer);
          state.delete(key);
        }
        tensors[key] = toWire(host);
      }
      return { ok: true, tensors, transfer };
    }
    case 'pinState': {
      const state = stateOf(req.state);
      const pinned = stateOf(req.as);
      for (const key of req.keys) {
        const t = state.get(key);
        if (!t) throw new Error(`state '${req.state}' has no tensor '${key}'`);
        pinned.set(key, onDevice(t) ? await toHost(t) : t);
      }
      return { ok: true };
    }
    case 'dropState': {
      const state = states.get(req.state);
      const dropped = req.keys ? req.keys.map((key) => state?.get(key)) : [...(state?.values() ?? [])];
      if (req.keys) for (const key of req.keys) state?.delete(key);
      else states.delete(req.state);
      letGo(dropped);
      return { ok: true };
    }
    case 'stats':
      return { ok: true, device: deviceStats() };
  }
}

parentPort!.on('message', ({ id, req }: { id: number; req: Request }) => {
  handle(req).then(
    ({ transfer, ...reply }: Reply & { transfer?: ArrayBuffer[] }) =>
      parentPort!.postMessage({ id, reply }, transfer ?? []),
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
