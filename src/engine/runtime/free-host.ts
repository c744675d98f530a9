/**
 * Frees host tensors' memory now rather than when their thread's garbage collector runs. Large
 * buffers that a thread allocates few JavaScript objects around (a session worker, a trainer
 * between calls) otherwise stay resident for many steps after they were dropped: a training
 * step's outputs, a read-back snapshot once written. Detaching the buffer
 * (ArrayBuffer.prototype.transfer, Node 22 and later) frees it; on Node 20, or for a buffer that
 * cannot be detached, it waits for the collector as before. Only a buffer a tensor spans whole is
 * detached: views of one buffer (tensors read from one file, or set in one message) keep it.
 */
type Detachable = ArrayBuffer & { transfer?: (length: number) => ArrayBuffer };

/** Frees `data`'s buffer now, where it is whole and Node can; the caller must not read it again. */
export function freeHostData(data: ArrayBufferView): void {
  const buffer = data.buffer as Detachable;
  if (!buffer.transfer || data.byteOffset !== 0 || data.byteLength !== buffer.byteLength) return;
  try {
    buffer.transfer(0);
  } catch {
    // Not detachable (a buffer some native binding owns): the collector frees it.
  }
}

/** freeHostData over tensors the caller is done with (a snapshot once written). */
export function freeHostTensors(tensors: Iterable<{ data: ArrayBufferView }>): void {
  for (const t of tensors) freeHostData(t.data);
}
