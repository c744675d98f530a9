/** Weight averaging of checkpoints (`duel model average`): the elementwise mean, one architecture only. */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { averageModelDirs } from '../../src/models/average.js';
import { parseLlamaConfig } from '../../src/models/llama/config.js';
import { initLlamaWeights } from '../../src/models/llama/weights.js';
import { loadModelDir, saveModelDir } from '../../src/models/model-dir.js';
import { tempDirs } from '../helpers/tmp.js';

const config = (hidden: number) =>
  parseLlamaConfig({
    model_type: 'llama',
    vocab_size: 13,
    hidden_size: hidden,
    intermediate_size: 12,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    eos_token_id: 3,
  });
const tmp = tempDirs('duel-average-');

describe('averageModelDirs', () => {
  it('writes the elementwise mean of every tensor, loadable as a model of the same config', () => {
    const root = tmp();
    const dirs = [1, 2, 3].map((seed) => {
      const dir = join(root, `m${seed}`);
      saveModelDir(dir, config(8), initLlamaWeights(config(8), seed));
      return dir;
    });
    averageModelDirs(dirs, join(root, 'avg'));
    const avg = loadModelDir(join(root, 'avg'));
    const ms = dirs.map(loadModelDir);
    expect(avg.config).toEqual(ms[0]!.config);
    expect(Object.keys(avg.weights).sort()).toEqual(Object.keys(ms[0]!.weights).sort());
    for (const [name, t] of Object.entries(avg.weights)) {
      expect(t.dims).toEqual(ms[0]!.weights[name]!.dims);
      for (const i of [0, 1, t.data.length - 1]) {
        const mean = ms.reduce((s, m) => s + m.weights[name]!.data[i]!, 0) / 3;
        expect(t.data[i]).toBeCloseTo(mean, 6);
      }
    }
    // One checkpoint averages to itself, bit for bit.
    averageModelDirs([dirs[1]!], join(root, 'one'));
    const one = loadModelDir(join(root, 'one'));
    for (const [name, t] of Object.entries(one.weights)) expect(t.data).toEqual(ms[1]!.weights[name]!.data);
  });

  it('refuses checkpoints of another architecture, naming the directory, and writes nothing', () => {
    const root = tmp();
    saveModelDir(join(root, 'a'), config(8), initLlamaWeights(config(8), 1));
    saveModelDir(join(root, 'b'), config(16), initLlamaWeights(config(16), 1));
    expect(() => averageModelDirs([join(root, 'a'), join(root, 'b')], join(root, 'avg'))).toThrow(
      /b: config.json differs from .*a's: only one architecture averages/,
    );
    expect(existsSync(join(root, 'avg'))).toBe(false);
    expect(() => averageModelDirs([], join(root, 'avg'))).toThrow(/models: at least one model directory/);
  });
});
