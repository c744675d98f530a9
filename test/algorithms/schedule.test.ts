import { describe, expect, it } from 'vitest';
import { planRun } from '../../services/orchestrator/spec.js';
import { recipesByRound } from '../../src/algorithms/recipes/index.js';
import { hyperparametersAt, parseSchedule } from '../../src/algorithms/schedule.js';
import { RunSpec } from '../../src/gen/duel/v1/runs.js';
import { refusal, refused } from '../helpers/refusal.js';

/** A valid 4-round spec but for what `over` sets. */
const specWith = (over: Partial<RunSpec>) =>
  RunSpec.fromPartial({
    policy: { artifact: { uri: 'file:///m', sha256: 'a'.repeat(64) } },
    reference: { artifact: { uri: 'file:///m', sha256: 'a'.repeat(64) } },
    judge: { artifact: { uri: 'file:///j', sha256: 'b'.repeat(64) } },
    promptsUri: 'p.jsonl',
    rounds: 4,
    sampling: { maxNewTokens: 4, temperature: 1 },
    ...over,
  });

describe('hyper-parameter schedules', () => {
  it('reads lists with repeats, and leaves plain values alone', () => {
    expect(parseSchedule('eta', '8x3,2,1.5')).toEqual([8, 8, 8, 2, 1.5]);
    expect(parseSchedule('lr', '1e-3x2, 5e-4')).toEqual([1e-3, 1e-3, 5e-4]);
    expect(parseSchedule('eta', '8')).toBeUndefined();
    expect(parseSchedule('labels', 'winner')).toBeUndefined();
  });

  it('gives each round its entry, the last one holding past the end', () => {
    const hp = { eta: '8x2,2', tau: '0.05', inpo_labels: 'winner' };
    expect([1, 2, 3, 9].map((r) => hyperparametersAt(hp, r).eta)).toEqual(['8', '8', '2', '2']);
    expect(hyperparametersAt(hp, 5)).toEqual({ eta: '2', tau: '0.05', inpo_labels: 'winner' });
  });

  it('refuses a malformed entry, naming the key and the entry', () => {
    const e = refusal(() => parseSchedule('spec.hyperparameters.eta', '8x2,fast'));
    expect(e.violations[0]!.field).toBe('spec.hyperparameters.eta');
    expect(e.violations[0]!.description).toMatch(/'fast' is not a schedule entry/);
  });

  it("validates every round's values with the recipe and names the round that breaks a rule", () => {
    const rounds = recipesByRound('inpo', { eta: '8x2,2', tau: '0.02x2,0.07' }, 10);
    expect(rounds.map((r) => [(r.hp as { eta: number }).eta, (r.hp as { tau: number }).tau])).toEqual([
      [8, 0.02],
      [8, 0.02],
      [2, 0.07],
    ]);
    // INPO needs η·τ < 1 in every round: 8 × 0.2 breaks it from round 2.
    const e = refusal(() => recipesByRound('inpo', { eta: '1,8', tau: '0.2' }, 5));
    expect(e.violations[0]!.field).toBe('hyperparameters.tau (round 2)');
    expect(e.violations[0]!.description).toMatch(/eta·tau must be below 1/);
    // A schedule longer than the run is checked only as far as the run goes.
    expect(recipesByRound('inpo', { eta: '1,8', tau: '0.2' }, 1)).toHaveLength(1);
  });

  it('refuses at CreateRun a schedule that would change what a round samples', async () => {
    const spec = specWith({ algorithm: 'sppo', hyperparameters: { k: '4,6', eta: '2' } });
    const e = await refused(planRun(spec));
    expect(e.violations[0]!.field).toBe('spec.hyperparameters.k');
    expect(e.violations[0]!.description).toMatch(/may not change what a round samples \(round 2/);
    expect((await planRun({ ...spec, hyperparameters: { k: '4', eta: '8x2,2' } })).sampling.k).toBe(4);
    // Reference updates only mean something for a loss with a reference.
    const noRef = await refused(planRun({ ...spec, hyperparameters: { k: '4' }, referenceUpdateEvery: 3 }));
    expect(noRef.violations[0]!.field).toBe('spec.reference_update_every');
    expect(noRef.violations[0]!.description).toMatch(/sppo's loss has no reference/);
    expect(
      (await planRun({ ...spec, algorithm: 'inpo', hyperparameters: {}, referenceUpdateEvery: 3 })).sampling
        .k,
    ).toBe(5);
  });

  it('refuses overlapping rounds for a policy-gradient loss, and a staleness beyond the bound', async () => {
    const spec = specWith({ algorithm: 'nash_md', maxStaleness: 1 });
    const pg = await refused(planRun(spec));
    expect(pg.violations[0]!.field).toBe('spec.max_staleness');
    expect(pg.violations[0]!.description).toMatch(/nash_md's loss is a policy-gradient estimate/);
    expect((await planRun({ ...spec, maxStaleness: 0 })).sampling.fromMixture).toBe(1);
    for (const algorithm of ['sppo', 'inpo', 'online_dpo', 'ipo_md', 'spo'])
      expect((await planRun({ ...spec, algorithm, maxStaleness: 2 })).prefix).toBe('runs');
    const far = await refused(planRun({ ...spec, algorithm: 'inpo', maxStaleness: 9 }));
    expect(far.violations[0]!.field).toBe('spec.max_staleness');
  });
});
