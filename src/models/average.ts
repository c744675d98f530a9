/**
 * The uniform average of several checkpoints' weights, as one model directory: iterate (Polyak)
 * averaging over a run's rounds. In a cyclic game each round's policy swings around the
 * equilibrium; the average of nearby iterates in weight space is one model that sits near their
 * centre, the single-model stand-in for the round mixture that SPPO's guarantee is about (the
 * mixture needs every checkpoint at serving time). Only checkpoints of one architecture average:
 * config.json must agree, and every tensor is checked by name and shape on load.
 */
import { DuelError } from '../errors.js';
import { toHfConfig } from './llama/config.js';
import type { HostTensor } from './llama/weights.js';
import { loadModelDir, saveModelDir } from './model-dir.js';

/** Writes the mean of `dirs`' weights to `out` (float32; tokenizer files from the first). */
export function averageModelDirs(dirs: string[], out: string): void {
  if (dirs.length === 0)
    throw DuelError.invalidArgument([
      { field: 'models', description: 'at least one model directory is needed' },
    ]);
  const first = loadModelDir(dirs[0]!);
  const config = JSON.stringify(toHfConfig(first.config));
  const sums: Record<string, Float64Array> = Object.fromEntries(
    Object.entries(first.weights).map(([name, t]) => [name, Float64Array.from(t.data as Float32Array)]),
  );
  for (const dir of dirs.slice(1)) {
    // One model at a time: memory stays at one model plus the float64 sums.
    const m = loadModelDir(dir);
    if (JSON.stringify(toHfConfig(m.config)) !== config)
      throw DuelError.invalidArgument([
        { field: dir, description: `config.json differs from ${dirs[0]}'s: only one architecture averages` },
      ]);
    for (const [name, sum] of Object.entries(sums)) {
      const data = m.weights[name]!.data as Float32Array;
      for (let i = 0; i < sum.length; i++) sum[i]! += data[i]!;
    }
  }
  const weights: Record<string, HostTensor> = Object.fromEntries(
    Object.entries(sums).map(([name, sum]) => [
      name,
      {
        dtype: 'float32',
        dims: first.weights[name]!.dims,
        data: Float32Array.from(sum, (x) => x / dirs.length),
      },
    ]),
  );
  saveModelDir(out, first.config, weights, { tokenizerFrom: dirs[0]! });
}
