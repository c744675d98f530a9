/**
 * A compiled graph whose weights are inputs held in its worker's state: set there once, read in
 * place by every run (no weight crosses the thread boundary per run), dropped with the session.
 * Every runner of a trained model (a judge, PairRM, a reward model, a decoder's log-probs) stands
 * on it; what else it keeps in the same state (LoRA adapters) it adds with `put` and reads by key.
 * `over` reads the weights where another state holds them (a training state's parameters, a LoRA
 * base shared by sessions) instead: loaded into that state's worker, it costs no copy of them.
 */
import type { CompiledModel } from './onnx.js';
import type { LoadOptions, Runtime, Session, StateBinding, WireTensor } from './runtime/runtime.js';
import type { ParameterSource } from './train-state.js';

let counter = 0;

export class WeightsSession {
  private constructor(
    /** The session: its provider, the bytes it moved, its device memory. */
    readonly session: Session,
    readonly state: string,
    /** Graph input → state key, for the weights. */
    private readonly reads: Record<string, string>,
    /** Where the weights are read from when another state holds them (`over`). */
    private readonly shared?: StateBinding['shared'],
  ) {}

  /**
   * Loads `model` and puts `weights` in its state; `inputs` are the graph's weight inputs (keys of
   * `weights` under the same names), `name` what the state is called after.
   */
  static async load(
    runtime: Runtime,
    model: CompiledModel | Uint8Array,
    weights: Record<string, WireTensor>,
    inputs: readonly string[],
    name: string,
    options: LoadOptions = {},
  ): Promise<WeightsSession> {
    const session = await runtime.load(model, options);
    const state = `${name}-${process.pid}-${counter++}`;
    await session.setState(state, weights);
    return new WeightsSession(session, state, Object.fromEntries(inputs.map((k) => [k, k])));
  }

  /**
   * Loads `model` beside `source` (in its worker) and reads the weights from it in place, run
   * after run, so they are never copied and a change to them (an optimizer step) is seen by the
   * next run. This session's own state holds only what `put` adds.
   */
  static async over(
    runtime: Runtime,
    model: CompiledModel | Uint8Array,
    source: ParameterSource,
    name: string,
    options: Omit<LoadOptions, 'near'> = {},
  ): Promise<WeightsSession> {
    const session = await runtime.load(model, { ...options, near: source.session });
    const state = `${name}-${process.pid}-${counter++}`;
    await session.setState(state, {});
    return new WeightsSession(
      session,
      state,
      {},
      {
        state: source.state,
        reads: Object.fromEntries(source.keys.map((k) => [k, k])),
      },
    );
  }

  /** A run with the weights (and `more`: other inputs read from this state) in place. */
  run(feeds: Record<string, WireTensor>, fetch: string[], more: Record<string, string> = {}) {
    return this.session.run(feeds, fetch, {
      state: this.state,
      reads: { ...this.reads, ...more },
      writes: {},
      ...(this.shared ? { shared: this.shared } : {}),
    });
  }

  /** Puts more tensors in the state (an adapter's). */
  put(tensors: Record<string, WireTensor>): Promise<void> {
    return this.session.setState(this.state, tensors);
  }

  drop(keys: string[]): Promise<void> {
    return this.session.dropState(this.state, keys);
  }

  async release(): Promise<void> {
    await this.session.dropState(this.state);
    await this.session.release();
  }
}
