/** `duel bench sessions` end to end on the testbed-sized model: every figure comes from a real trainer process. */
import { expect, it } from 'vitest';
import { runSessionsBench } from '../../bench/sessions.js';

it('times steps in process and over gRPC, resumes a SIGKILLed trainer, and counts memory per session', async () => {
  const r = await runSessionsBench({
    model: 'testbed',
    steps: 2,
    batch: 2,
    tokens: 16,
    loraSessions: [1, 2],
    log: () => {},
  });
  expect(r.in_process_step_ms).toBeGreaterThan(0);
  expect(r.grpc_step_ms).toBeGreaterThan(0);
  expect(r.small_calls_per_s).toBeGreaterThan(0);
  for (const k of ['full', 'lora'] as const) expect(r.sample[k].after_step_ms).toBeGreaterThan(0);
  // Killed 5 steps (10 calls) after the snapshot at step 10, the session replays those 10.
  expect(r.replayed_calls).toBe(10);
  expect(r.restore_log_ms).toBeGreaterThan(0);
  expect(r.memory.map((m) => [m.kind, m.sessions])).toEqual([
    ['none', 0],
    ['lora r8', 1],
    ['lora r8', 2],
    ['lora r8, arena', 1],
    ['lora r8, arena', 2],
    ['full', 1],
    ['full', 2],
  ]);
}, 180_000);

it('probes sessions in process: every stage of a full-weight session, each LoRA session, each snapshot part', async () => {
  const { runSessionProbe } = await import('../../bench/session-probe.js');
  const r = await runSessionProbe({
    model: 'testbed',
    loraSessions: 2,
    arena: false,
    inPlace: true,
    checkpointing: true,
    log: () => {},
  });
  expect(r.gradient_checkpointing).toBe(true);
  expect(r.full.map((s) => s.stage)).toEqual([
    'weights on the host',
    'session created',
    'first forwardBackward',
    'first optimStep',
    'second step',
    'after 10 steps',
    'after 10 steps and 1 s idle',
    'session closed, 1 s idle',
  ]);
  expect(r.lora.map((x) => x.sessions)).toEqual([1, 2]);
  expect(r.snapshots).toHaveLength(3);
  for (const x of r.snapshots) expect(x.read_ms + x.write_ms + x.publish_ms).toBeGreaterThan(0);
  expect(r.lora_round.seconds).toBeGreaterThan(0);
}, 120_000);
