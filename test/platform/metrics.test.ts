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
});
