/** One schema for training settings: the CLI's flags, a run spec and the trainer's request agree. */
import { describe, expect, it } from 'vitest';
import {
  loopSettings,
  parseTrainingSettings,
  settingsFromWire,
  settingsToWire,
} from '../../src/algorithms/training-settings.js';
import { DuelError } from '../../src/errors.js';
import { parseRunSpec } from '../../src/platform/run-spec.js';

const field = (key: string) => `--${key}`;

describe('training settings', () => {
  it('fills the same defaults whichever way the settings arrive', () => {
    const fromNothing = parseTrainingSettings({}, field);
    expect(fromNothing).toMatchObject({
      name: 'adamw',
      learning_rate: 1e-4,
      batch_size: 8,
      grad_clip: 1,
      schedule: 'constant',
    });
    // No OptimizerConfig on the wire, and a run spec without an optimizer block: the same.
    expect(parseTrainingSettings(settingsFromWire(undefined), field)).toEqual(fromNothing);
    const spec = parseRunSpec(
      {
        algorithm: 'sppo',
        policy: { uri: 'file:///p', sha256: 'a'.repeat(64) },
        judge: { uri: 'file:///j', sha256: 'b'.repeat(64) },
        prompts: 'p.jsonl',
        rounds: 1,
      },
      '/tmp',
      'spec.yaml',
    );
    expect(parseTrainingSettings(settingsFromWire(spec.optimizer), field)).toEqual({
      ...fromNothing,
      epochs: 1,
    });
    expect(loopSettings(fromNothing, 3)).toMatchObject({
      lr: 1e-4,
      epochs: 1,
      batchSize: 8,
      gradClip: 1,
      seed: 3,
    });
  });

  it('survives the wire both ways', () => {
    const s = parseTrainingSettings(
      { name: 'sgd', learning_rate: 0.5, momentum: 0.9, steps: 7, grad_clip: 0, schedule: 'cosine' },
      field,
    );
    expect(parseTrainingSettings(settingsFromWire(settingsToWire(s)), field)).toEqual(s);
    expect(loopSettings(s, 0)).toMatchObject({
      optimizer: { kind: 'sgd', momentum: 0.9, weightDecay: 0 },
      steps: 7,
      gradClip: 0,
      schedule: 'cosine',
    });
  });

  it('names each bad field as its caller spells it, all at once', () => {
    const err = (() => {
      try {
        parseTrainingSettings({ schedule: 'foo', learning_rate: -1, steps: 2, epochs: 3 }, field);
      } catch (e) {
        return e as DuelError;
      }
    })();
    expect(err).toBeInstanceOf(DuelError);
    expect(err!.violations.map((v) => v.field).sort()).toEqual(['--learning_rate', '--schedule']);
    expect(() => parseTrainingSettings({ steps: 2, epochs: 3 }, (k) => `spec.optimizer.${k}`)).toThrow(
      /spec\.optimizer\.steps: set steps or epochs, not both/,
    );
    expect(() => parseTrainingSettings({ momentum: 1 }, field)).toThrow(/--momentum/);
  });
});
