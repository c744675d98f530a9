/**
 * The decoder's parameters under their Hugging Face names and shapes (nn.Linear weights are
 * [out, in]), so model.safetensors files are interchangeable with transformers'. Initialisation
 * follows transformers' `_init_weights`: N(0, initializer_range²) for matrices, ones for norms,
 * zeros for biases.
 */
import { fillNormal, rng } from '../common/rng.js';
import type { LlamaConfig } from './config.js';

export interface ParamSpec {
  name: string;
  shape: number[];
  init: 'normal' | 'ones' | 'zeros';
}

export const layerPrefix = (i: number) => `model.layers.${i}`;

export function llamaParams(cfg: LlamaConfig): ParamSpec[] {
  const { hiddenSize: h, intermediateSize: f, vocabSize: v, headDim: d } = cfg;
  const q = cfg.numHeads * d;
  const kv = cfg.numKvHeads * d;
  const specs: ParamSpec[] = [{ name: 'model.embed_tokens.weight', shape: [v, h], init: 'normal' }];
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = layerPrefix(i);
    specs.push(
      { name: `${p}.input_layernorm.weight`, shape: [h], init: 'ones' },
      { name: `${p}.self_attn.q_proj.weight`, shape: [q, h], init: 'normal' },
      { name: `${p}.self_attn.k_proj.weight`, shape: [kv, h], init: 'normal' },
      { name: `${p}.self_attn.v_proj.weight`, shape: [kv, h], init: 'normal' },
    );
    if (cfg.qkvBias)
      specs.push(
        { name: `${p}.self_attn.q_proj.bias`, shape: [q], init: 'zeros' },
        { name: `${p}.self_attn.k_proj.bias`, shape: [kv], init: 'zeros' },
        { name: `${p}.self_attn.v_proj.bias`, shape: [kv], init: 'zeros' },
      );
    if (cfg.qkNorm)
      specs.push(
        { name: `${p}.self_attn.q_norm.weight`, shape: [d], init: 'ones' },
        { name: `${p}.self_attn.k_norm.weight`, shape: [d], init: 'ones' },
      );
    specs.push(
      { name: `${p}.self_attn.o_proj.weight`, shape: [h, q], init: 'normal' },
      { name: `${p}.post_attention_layernorm.weight`, shape: [h], init: 'ones' },
      { name: `${p}.mlp.gate_proj.weight`, shape: [f, h], init: 'normal' },
      { name: `${p}.mlp.up_proj.weight`, shape: [f, h], init: 'normal' },
      { name: `${p}.mlp.down_proj.weight`, shape: [h, f], init: 'normal' },
    );
  }
  specs.push({ name: 'model.norm.weight', shape: [h], init: 'ones' });
  if (!cfg.tieWordEmbeddings) specs.push({ name: 'lm_head.weight', shape: [v, h], init: 'normal' });
  return specs;
}

/** How many numbers a parameter list holds. */
export function parameterCount(specs: ParamSpec[]): number {
  return specs.reduce((sum, p) => sum + p.shape.reduce((a, b) => a * b, 1), 0);
}

export interface HostTensor {
  dtype: 'float32' | 'float64';
  dims: number[];
  data: Float32Array | Float64Array;
}

/** Fresh values for `specs`: N(0, std²) matrices, ones and zeros, reproducible from `seed`. */
export function initWeights(
  specs: ParamSpec[],
  std: number,
  seed: number,
  dtype: 'float32' | 'float64' = 'float32',
): Record<string, HostTensor> {
  const next = rng(seed);
  const out: Record<string, HostTensor> = {};
  for (const spec of specs) {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    const data = dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
    if (spec.init === 'normal') fillNormal(data, std, next);
    else if (spec.init === 'ones') data.fill(1);
    out[spec.name] = { dtype, dims: spec.shape, data };
  }
  return out;
}

/** Fresh weights for `cfg`, reproducible from `seed`. */
export function initLlamaWeights(
  cfg: LlamaConfig,
  seed: number,
  dtype: 'float32' | 'float64' = 'float32',
): Record<string, HostTensor> {
  return initWeights(llamaParams(cfg), cfg.initializerRange, seed, dtype);
}
