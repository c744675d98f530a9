/**
 * Admission control for a service's expensive calls: at most `maxActive` run at once and at most
 * `maxQueued` wait; a call beyond that is refused at once with RESOURCE_EXHAUSTED, so a flood of
 * requests costs the service a counter, not memory. Waiting calls that are cancelled leave the
 * queue.
 */
import { DuelError } from '../errors.js';

export class Admission {
  private active = 0;
  private readonly waiting: { resolve: () => void; reject: (e: unknown) => void }[] = [];

  constructor(
    readonly maxActive: number,
    readonly maxQueued: number,
  ) {
    if (!(maxActive >= 1)) throw new Error(`Admission: maxActive must be >= 1, got ${maxActive}`);
  }

  /** Runs `work` when a slot is free; refuses when the queue is full. */
  async run<T>(work: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (this.active >= this.maxActive) {
      if (this.waiting.length >= this.maxQueued)
        throw DuelError.resourceExhausted(
          `busy: ${this.active} calls running and ${this.waiting.length} queued (limits ${this.maxActive} and ${this.maxQueued})`,
        );
      await new Promise<void>((resolve, reject) => {
        const entry = { resolve, reject };
        this.waiting.push(entry);
        signal?.addEventListener('abort', () => {
          const i = this.waiting.indexOf(entry);
          if (i >= 0) this.waiting.splice(i, 1);
          reject(signal.reason);
        });
      });
    }
    this.active++;
    try {
      return await work();
    } finally {
      this.active--;
      this.waiting.shift()?.resolve();
    }
  }

  get load(): { active: number; queued: number } {
    return { active: this.active, queued: this.waiting.length };
  }
}
