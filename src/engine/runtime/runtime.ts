/**
 * A pool of session workers. A session (and any state it binds) lives in one worker for its
 * whole life; sessions are spread over workers round-robin. Every call is a message round trip,
 * so the caller's event loop stays free while ONNX Runtime computes.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { CompiledModel } from '../onnx.js';
import type {
  ComputeDtype,
  DeviceStats,
  Moved,
  Provider,
  Reply,
  Request,
  StateBinding,
  WireTensor,
} from './protocol.js';

export type { ComputeDtype, DeviceStats, Moved, Provider, StateBinding, WireTensor };

export interface RuntimeOptions {
  /** Worker threads. @default 1 */
  workers?: number;
  /** @default 'cpu' */
  provider?: Provider;
  /** Threads per op; 0 = the container's CPU limit. @default 0 */
  intraOpThreads?: number;
  /**
   * Profile every session's runs (per node: provider, kernel time) into JSON files whose paths
   * start with this; `endProfiling` writes them (`duel bench placement` reads them).
   */
  profilePrefix?: string;
  /**
   * The onnxruntime-node package the workers load (a directory): on the cuda provider the core
   * that matches its CUDA provider library, which is not the default one (scripts/cuda.sh).
   * @default DUEL_ONNXRUNTIME_NODE on cuda, else the installed onnxruntime-node
   */
  onnxruntimeNode?: string;
  /**
   * What the graphs that offer a choice compute in (decoding: DecoderRunner.create/forAdapters;
   * duel's judge and reward models: JudgeRunner.create, RewardRunner.create).
   * float16 halves their weights and KV cache and runs on the GPU's half-precision units, with
   * norms, softmax and the logits in float32. @default 'float32'
   */
  dtype?: ComputeDtype;
}

/** CPUs this process may use: the cgroup quota when one is set, else the visible cores. */
export function cpuLimit(): number {
  try {
    const [quota, period] = readFileSync('/sys/fs/cgroup/cpu.max', 'utf8').trim().split(/\s+/);
    if (quota && quota !== 'max') return Math.max(1, Math.floor(Number(quota) / Number(period)));
  } catch {
    // No cgroup v2 quota file: not in a limited container.
  }
  return availableParallelism();
}

/** The compiled worker; tests run from src/ (TypeScript) against the build in dist/. */
function workerUrl(): URL {
  const here = new URL('./worker.js', import.meta.url);
  if (!import.meta.url.endsWith('.ts')) return here;
  return new URL(here.href.replace('/src/engine/runtime/', '/dist/src/engine/runtime/'));
}

/**
 * One worker thread, spawned on the first call: a service reports SERVING without waiting for
 * ONNX Runtime to load in threads that compete with it for the cores, and a role that never runs
 * a graph never starts one.
 */
class WorkerChannel {
  constructor(private readonly onnxruntimeNode: string | undefined) {}

  private spawned: { worker: Worker; started: Promise<void> } | undefined;
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();
  private next = 0;

  private spawn(): { worker: Worker; started: Promise<void> } {
    const worker = new Worker(workerUrl(), { workerData: { onnxruntimeNode: this.onnxruntimeNode } });
    /** Settles once the worker has loaded ONNX Runtime, or has failed or exited first. */
    const started = new Promise<void>((resolve) => {
      worker.once('exit', () => resolve());
      worker.once('error', () => resolve());
      worker.on('message', (m: { ready?: true }) => m.ready && resolve());
    });
    worker.on('message', ({ id, reply }: { id?: number; reply?: Reply }) => {
      if (id === undefined) return;
      this.pending.get(id)?.resolve(reply!);
      this.pending.delete(id);
    });
    worker.on('error', (error) => {
      for (const p of this.pending.values()) p.reject(error);
      this.pending.clear();
    });
    return { worker, started };
  }

  /** `transfer`: buffers moved to the worker rather than copied (unusable here afterwards). */
  async call(req: Request, transfer: ArrayBuffer[] = []): Promise<Extract<Reply, { ok: true }>> {
    this.spawned ??= this.spawn();
    const { worker } = this.spawned;
    const id = this.next++;
    const reply = await new Promise<Reply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ id, req }, transfer);
    });
    if (!reply.ok) throw new Error(reply.error);
    return reply;
  }

  /** Waits for the worker to finish starting: terminating it while the native binding loads aborts the process. */
  async terminate(): Promise<number> {
    if (!this.spawned) return 0;
    await this.spawned.started;
    return this.spawned.worker.terminate();
  }
}

export interface LoadOptions {
  /**
   * Keep every output in device memory on a provider that has its own (webgpu): for a session
   * whose state binding writes outputs back run after run. Fetched outputs are copied back.
   */
  outputsOnDevice?: boolean;
  /**
   * Of those, the outputs every run reads on the host (a loss, drawn tokens): ONNX Runtime writes
   * them to host memory directly. Each must be an output of the model.
   */
  hostOutputs?: readonly string[];
  /** Give activation memory back after each run (SessionOptions.lowMemory). */
  lowMemory?: boolean;
  /** Create the session in this session's worker, so the two can bind the same named states. */
  near?: Session;
}

export class Session {
  /** Bytes this session's runs moved between host and device memory so far (zero on cpu). */
  readonly moved: Moved = { toDevice: 0, toHost: 0, readBacks: 0 };

  constructor(
    private readonly channel: WorkerChannel,
    readonly id: number,
    readonly inputNames: readonly string[],
    readonly outputNames: readonly string[],
  ) {}

  /** Runs the graph; returns the fetched outputs (all of them by default). */
  async run(
    feeds: Record<string, WireTensor>,
    fetch: string[] = [...this.outputNames],
    binding?: StateBinding,
  ) {
    const reply = await this.channel.call({ op: 'run', session: this.id, feeds, fetch, binding });
    this.moved.toDevice += reply.moved?.toDevice ?? 0;
    this.moved.toHost += reply.moved?.toHost ?? 0;
    this.moved.readBacks += reply.moved?.readBacks ?? 0;
    return reply.tensors!;
  }

  /**
   * Stores `tensors` in a state held by this session's worker, on this session's device. They are
   * copied to the worker, unless `handOver`: then their buffers move there without a copy, and the
   * caller's arrays are left empty (for tensors made only to be stored, as a new optimizer's zero
   * slots).
   */
  async setState(
    state: string,
    tensors: Record<string, WireTensor>,
    o: { handOver?: boolean } = {},
  ): Promise<void> {
    const moved = o.handOver
      ? [...new Set(Object.values(tensors).map((t) => t.data.buffer as ArrayBuffer))]
      : [];
    await this.channel.call({ op: 'setState', session: this.id, state, tensors }, moved);
  }

  /** `transfer`: see the getState request (the tensors handed over leave the state). */
  async getState(
    state: string,
    keys: string[],
    o: { transfer?: boolean } = {},
  ): Promise<Record<string, WireTensor>> {
    return (
      await this.channel.call({ op: 'getState', state, keys, ...(o.transfer ? { transfer: true } : {}) })
    ).tensors!;
  }

  /** Holds `keys` of `state` under `as` as they are now (the pinState request). */
  async pinState(state: string, keys: string[], as: string): Promise<void> {
    await this.channel.call({ op: 'pinState', state, keys, as });
  }

  /** Drops a whole state, or only `keys` of it. */
  async dropState(state: string, keys?: string[]): Promise<void> {
    await this.channel.call(keys ? { op: 'dropState', state, keys } : { op: 'dropState', state });
  }

  async release(): Promise<void> {
    await this.channel.call({ op: 'release', session: this.id });
  }

  /** The worker this session lives in (Runtime.load's `near`). */
  get worker(): WorkerChannel {
    return this.channel;
  }

  /** What this session's worker holds in device memory (every state in it, not only this session's). */
  async deviceStats(): Promise<DeviceStats> {
    return (await this.channel.call({ op: 'stats' })).device!;
  }
}

export class Runtime {
  private readonly channels: WorkerChannel[];
  readonly provider: Provider;
  readonly dtype: ComputeDtype;
  private readonly profilePrefix: string | undefined;
  readonly intraOpThreads: number;
  private turn = 0;

  constructor(options: RuntimeOptions = {}) {
    const n = options.workers ?? 1;
    if (!Number.isInteger(n) || n < 1)
      throw new Error(`runtime: workers must be a positive integer, got ${n}`);
    this.provider = options.provider ?? 'cpu';
    this.dtype = options.dtype ?? 'float32';
    const ortPackage =
      options.onnxruntimeNode ??
      (this.provider === 'cuda' ? process.env.DUEL_ONNXRUNTIME_NODE || undefined : undefined);
    this.channels = Array.from({ length: n }, () => new WorkerChannel(ortPackage));
    this.profilePrefix = options.profilePrefix;
    this.intraOpThreads = options.intraOpThreads || Math.max(1, Math.floor(cpuLimit() / n));
  }

  /** How many worker threads run sessions. */
  get workers(): number {
    return this.channels.length;
  }

  async load(model: CompiledModel | Uint8Array, options: LoadOptions = {}): Promise<Session> {
    const bytes = model instanceof Uint8Array ? model : model.bytes;
    const { near, hostOutputs, ...worker } = options;
    let outputLocations: Record<string, 'host' | 'device'> | undefined;
    if (hostOutputs?.length) {
      if (model instanceof Uint8Array)
        throw new Error('hostOutputs: needs a compiled model (its output names)');
      const outputs = model.outputs.map((o) => o.name);
      const unknown = hostOutputs.filter((n) => !outputs.includes(n));
      if (unknown.length) throw new Error(`hostOutputs: ${unknown.join(', ')} not outputs of the model`);
      outputLocations = Object.fromEntries(
        outputs.map((n) => [n, hostOutputs.includes(n) ? 'host' : 'device']),
      );
    }
    const channel = near ? near.worker : this.channels[this.turn++ % this.channels.length]!;
    const reply = await channel.call({
      op: 'create',
      bytes,
      options: {
        provider: this.provider,
        intraOpThreads: this.intraOpThreads,
        profilePrefix: this.profilePrefix,
        ...worker,
        ...(outputLocations ? { outputLocations } : {}),
      },
    });
    return new Session(channel, reply.session!, reply.inputNames!, reply.outputNames!);
  }

  /** Writes the profiles of every session so far (a runtime made with `profilePrefix`). */
  async endProfiling(): Promise<void> {
    await Promise.all(this.channels.map((c) => c.call({ op: 'endProfiling' })));
  }

  async close(): Promise<void> {
    await Promise.all(this.channels.map((c) => c.terminate()));
  }
}
