/**
 * A training session's state directory (SaveState, LoadState, the journal's snapshots): a float16
 * session's loss scale goes through it, and a tampered one is refused naming what is wrong.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readSessionState, writeSessionState } from '../../services/trainer/session-state.js';
import { Code, DuelError } from '../../src/errors.js';
import { ModelRef, OptimizerConfig } from '../../src/gen/duel/v1/common.js';
import { fileTempDir } from '../helpers/tmp.js';

const root = fileTempDir('duel-session-state-');

const state = (lossScale?: { scale: number; goodSteps: number }) => ({
  base: ModelRef.fromPartial({ name: 'base', artifact: { uri: 'file:///base', sha256: '00' } }),
  optimizer: OptimizerConfig.fromPartial({ name: 'adamw', learningRate: 1e-3 }),
  seed: 3,
  lora: undefined,
  snapshot: {
    tensors: { w: { dtype: 'float32' as const, dims: [2], data: Float32Array.of(1.5, -2) } },
    steps: 4,
    pendingLoss: 0.25,
    ...(lossScale ? { lossScale } : {}),
  },
});

let tampered = 0;

describe('session state directories', () => {
  it('carry a float16 session’s loss scale, and nothing for a float32 one', () => {
    writeSessionState(join(root, 'half'), state({ scale: 2 ** 11, goodSteps: 37 }));
    expect(readSessionState(join(root, 'half')).snapshot.lossScale).toEqual({
      scale: 2 ** 11,
      goodSteps: 37,
    });
    writeSessionState(join(root, 'full'), state());
    const full = readSessionState(join(root, 'full'));
    expect(full.snapshot.lossScale).toBeUndefined();
    expect(Array.from(full.snapshot.tensors.w!.data as Float32Array)).toEqual([1.5, -2]);
  });

  it.each([
    [{ scale: 0, good_steps: 1 }, 'loss_scale.scale must be a positive number'],
    [{ scale: 'big', good_steps: 1 }, 'loss_scale.scale must be a positive number'],
    [{ scale: 1024, good_steps: -1 }, 'loss_scale.good_steps must be a count'],
    [{ scale: 1024 }, 'loss_scale.good_steps must be a count'],
  ])('refuse a loss scale of %j, naming the field', (lossScale, problem) => {
    const dir = join(root, `bad-${++tampered}`);
    writeSessionState(dir, state({ scale: 2 ** 11, goodSteps: 0 }));
    const meta = JSON.parse(readFileSync(join(dir, 'session.json'), 'utf8'));
    writeFileSync(join(dir, 'session.json'), JSON.stringify({ ...meta, loss_scale: lossScale }));
    let error: unknown;
    try {
      readSessionState(dir);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(DuelError);
    expect((error as DuelError).code).toBe(Code.INVALID_ARGUMENT);
    expect((error as DuelError).message).toBe(`state: session.json: ${problem}`);
  });
});
