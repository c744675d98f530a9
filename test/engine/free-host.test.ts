/**
 * Host tensors a state or a caller is done with are freed at once where Node can detach their
 * buffer (Node 22 and later); views of a shared buffer are left alone, and so is everything on
 * Node 20, whose collector frees them later. What it saves is `bench session-probe`'s figure.
 */
import { describe, expect, it } from 'vitest';
import { freeHostTensors } from '../../src/engine/index.js';

const detachable = typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === 'function';

describe('freeHostTensors', () => {
  it('frees a tensor’s whole buffer where Node can, and never a buffer other views share', () => {
    const whole = { data: new Float32Array(1024).fill(1) };
    const shared = new Float32Array(2048).fill(2);
    const view = { data: shared.subarray(1024) };
    freeHostTensors([whole, view]);
    expect(whole.data.length).toBe(detachable ? 0 : 1024);
    expect(view.data.length).toBe(1024);
    expect(shared[0]).toBe(2);
  });
});
