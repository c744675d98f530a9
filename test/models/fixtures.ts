/** Shared test models: weights far enough from their init that every parameter matters. */
import { fillNormal, rng } from '../../src/models/common/rng.js';
import type { LlamaConfig } from '../../src/models/llama/config.js';
import { type HostTensor, initLlamaWeights, llamaParams } from '../../src/models/llama/weights.js';

/**
 * Weights with norms and biases off their init values, so every parameter matters. `scale`
 * multiplies the N(0, 0.02²) matrices: 10 makes sharp distributions, 2.5 milder ones.
 */
export function weights(
  cfg: LlamaConfig,
  seed: number,
  dtype: 'float32' | 'float64' = 'float64',
  scale = 10,
): Record<string, HostTensor> {
  const w = initLlamaWeights(cfg, seed, dtype);
  const next = rng(seed + 1);
  for (const spec of llamaParams(cfg)) {
    if (spec.init !== 'normal') fillNormal(w[spec.name]!.data, 0.3, next);
    const data = w[spec.name]!.data;
    for (let i = 0; i < data.length; i++)
      data[i] = spec.init === 'ones' ? 1 + data[i]! : spec.init === 'normal' ? scale * data[i]! : data[i]!;
  }
  return w;
}
