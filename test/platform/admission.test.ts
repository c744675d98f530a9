/** Admission control: bounded concurrency, a bounded queue, refusal beyond it, cancelled waiters leave. */
import { describe, expect, it } from 'vitest';
import { Code } from '../../src/errors.js';
import { Admission } from '../../src/platform/admission.js';

const gate = () => {
  let open: () => void = () => {};
  const closed = new Promise<void>((resolve) => (open = resolve));
  return { closed, open };
};

describe('Admission', () => {
  it('runs up to maxActive at once, queues up to maxQueued, refuses the rest with RESOURCE_EXHAUSTED', async () => {
    const a = new Admission(2, 1);
    const g = gate();
    let running = 0;
    let peak = 0;
    const work = () =>
      a.run(async () => {
        running++;
        peak = Math.max(peak, running);
        await g.closed;
        running--;
        return 'done';
      });
    const calls = [work(), work(), work()];
    await Promise.resolve();
    expect(a.load).toEqual({ active: 2, queued: 1 });
    await expect(work()).rejects.toMatchObject({
      code: Code.RESOURCE_EXHAUSTED,
      message: expect.stringMatching(/busy: 2 calls running and 1 queued/),
    });
    g.open();
    expect(await Promise.all(calls)).toEqual(['done', 'done', 'done']);
    expect(peak).toBe(2);
    expect(a.load).toEqual({ active: 0, queued: 0 });
  });

  it('drops a cancelled waiter from the queue', async () => {
    const a = new Admission(1, 1);
    const g = gate();
    const first = a.run(() => g.closed);
    const controller = new AbortController();
    const second = a.run(async () => 'ran', controller.signal);
    controller.abort(new Error('client went away'));
    await expect(second).rejects.toThrow('client went away');
    expect(a.load).toEqual({ active: 1, queued: 0 });
    g.open();
    await first;
  });
});
