/** Service metrics: what a service records before prom-client has loaded is in the exposition after. */
import { describe, expect, it } from 'vitest';
import { ServiceMetrics } from '../../src/platform/metrics.js';

describe('ServiceMetrics', () => {
  it('keeps observations made before it loads, and records later ones directly', async () => {
    const m = new ServiceMetrics('trainer');
    m.observe('/duel.v1.TrainerService/TrainRound', 'OK', 0.5);
    m.count('duel_trainer_steps_total', 'optimizer steps taken', 3);
    m.seconds('duel_orchestrator_stage_seconds', 'stage time', 2, 'trained');
    const before = await m.text();
    expect(before).toMatch(
      /^duel_grpc_server_handled_total\{method="\/duel\.v1\.TrainerService\/TrainRound",code="OK",service="trainer"\} 1$/m,
    );
    expect(before).toMatch(/^duel_trainer_steps_total\{service="trainer"\} 3$/m);
    expect(before).toMatch(/^duel_orchestrator_stage_seconds_count\{[^}]*stage="trained"[^}]*\} 1$/m);
    m.count('duel_trainer_steps_total', 'optimizer steps taken', 2);
    expect(await m.text()).toMatch(/^duel_trainer_steps_total\{service="trainer"\} 5$/m);
  });

  it('reads a sampled gauge at each scrape, and refuses one name twice', async () => {
    const m = new ServiceMetrics('sampler');
    let queued = 0;
    m.sampled('duel_admission_queued', 'calls waiting', () => queued);
    expect(await m.text()).toMatch(/^duel_admission_queued\{service="sampler"\} 0$/m);
    queued = 7;
    expect(await m.text()).toMatch(/^duel_admission_queued\{service="sampler"\} 7$/m);
    expect(() => m.sampled('duel_admission_queued', 'again', () => 1)).toThrow(/registered twice/);
  });

  it('puts a 3 ms step in the 5 ms bucket', async () => {
    const m = new ServiceMetrics('trainer');
    m.latency('duel_trainer_step_seconds', 'one step', 0.003);
    const text = await m.text();
    expect(text).toMatch(/^duel_trainer_step_seconds_bucket\{le="0\.001",service="trainer"\} 0$/m);
    expect(text).toMatch(/^duel_trainer_step_seconds_bucket\{le="0\.005",service="trainer"\} 1$/m);
  });
});
