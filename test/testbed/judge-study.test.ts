/** `duel testbed judge` from the built command: the learned judge alone, graded against P*. */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fileTempDir } from '../helpers/tmp.js';
import { duel } from '../helpers/toy.js';

const root = fileTempDir('duel-judge-study-');
const SMALL = [
  'data.judge_pairs=128',
  'data.judge_epochs=2',
  'judge.hidden_size=16',
  'judge.layers=1',
].flatMap((s) => ['--set', s]);

describe('duel testbed judge', () => {
  it('builds the judge of the given kind and labels and prints its fidelity to P*', async () => {
    for (const [kind, labels] of [
      ['pairwise', 'soft'],
      ['bt', 'drawn'],
    ] as const) {
      const out = join(root, kind);
      const r = await duel([
        'testbed',
        'judge',
        '--seed',
        '2',
        '--out',
        out,
        ...SMALL,
        '--set',
        `judge.kind=${kind}`,
        '--set',
        `data.judge_labels=${labels}`,
      ]);
      expect(r.code, r.stderr.slice(-2000)).toBe(0);
      expect(r.stderr).toMatch(/judge: step 4\/4, loss \d\.\d{4}/);
      const s = JSON.parse(r.stdout);
      expect(s.build).toMatchObject({ 'judge.kind': kind, 'data.judge_labels': labels });
      expect(s.training.steps).toBe(4);
      expect(existsSync(join(out, 'judge', 'config.json'))).toBe(true);
      const f = s.fidelity;
      expect(f.cross_entropy).toBeGreaterThan(f.cross_entropy_floor);
      expect(f.label_agreement).toBeLessThanOrEqual(f.oracle_label_agreement + 1e-12);
      expect(f.cycle_probs).toHaveLength(3);
    }
  }, 120_000);

  it('refuses keys the judge is not built from, naming them', async () => {
    const r = await duel(['testbed', 'judge', '--out', join(root, 'bad'), '--set', 'run.rounds=3']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      '--set run.rounds: the judge is built from game.*, judge.* and data.* keys only',
    );
    const k = await duel([
      'testbed',
      'judge',
      '--out',
      join(root, 'bad'),
      '--set',
      'data.judge_labels=maybe',
    ]);
    expect(k.code).toBe(2);
    expect(k.stderr).toMatch(/--set data\.judge_labels: .*"drawn".*"soft"/);
  });
});
