/** reference_update_every: which reference each round's loss regularises toward (the orchestrator's choice). */
import { describe, expect, it } from 'vitest';
import { lossReference } from '../../services/orchestrator/driver.js';
import { DuelError } from '../../src/errors.js';
import { type RoundSummary, RunSpec } from '../../src/gen/duel/v1/runs.js';

const art = (n: number) => ({ uri: `file:///ckpt/round-${n}`, sha256: String(n).repeat(64).slice(0, 64) });
const spec = (every: number) =>
  RunSpec.fromPartial({ reference: { artifact: art(0), name: 'reference' }, referenceUpdateEvery: every });
const rounds = (n: number): RoundSummary[] =>
  Array.from({ length: n }, (_, i) => ({
    round: i + 1,
    checkpoint: { artifact: art(i + 1), runId: 'r', round: i + 1 },
    metrics: { values: {} },
    startedAt: undefined,
    policyVersion: i,
    finishedAt: undefined,
    sampled: undefined,
    scored: undefined,
  }));

describe('reference updates', () => {
  it('keeps the spec’s reference when off', () => {
    for (const r of [1, 2, 7]) expect(lossReference(spec(0), rounds(r - 1), r)!.artifact).toEqual(art(0));
  });

  it('moves the reference to the checkpoint of round N·⌊(r−1)/N⌋', () => {
    const chosen = [1, 2, 3, 4, 5, 6, 7].map((r) => lossReference(spec(3), rounds(r - 1), r)!.artifact!.uri);
    expect(chosen).toEqual([0, 0, 0, 3, 3, 3, 6].map((n) => art(n).uri));
  });

  it('refuses a round whose anchor has no checkpoint in the record', () => {
    expect(() => lossReference(spec(2), rounds(1), 3)).toThrow(DuelError);
    expect(() => lossReference(spec(2), rounds(1), 3)).toThrow(/round 3 regularises toward round 2/);
  });
});
