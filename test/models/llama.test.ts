/** The traced decoder against an independent reference, across the Llama family's variations. */
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { compile, Graph, grad, T, type Tensor } from '../../src/engine/index.js';
import { type LlamaConfig, parseLlamaConfig, toHfConfig } from '../../src/models/llama/config.js';
import { llamaForward } from '../../src/models/llama/decoder.js';
import type { HostTensor } from '../../src/models/llama/weights.js';
import { weights } from '../helpers/model-fixtures.js';
import { referenceLogits } from './llama-reference.js';

const tiny = (extra: Record<string, unknown>): LlamaConfig =>
  parseLlamaConfig({
    model_type: 'llama',
    vocab_size: 11,
    hidden_size: 16,
    intermediate_size: 24,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    rope_theta: 100,
    ...extra,
  });

const VARIANTS: [string, LlamaConfig][] = [
  ['llama (MHA, untied)', tiny({})],
  ['llama (GQA 4:2, head_dim ≠ hidden/heads)', tiny({ num_key_value_heads: 2, head_dim: 6 })],
  [
    'qwen2 (QKV bias, tied embeddings)',
    tiny({ model_type: 'qwen2', num_key_value_heads: 1, tie_word_embeddings: true }),
  ],
  [
    'qwen3 (q/k norm, GQA 4:2, head_dim ≠ hidden/heads, tied embeddings)',
    tiny({ model_type: 'qwen3', num_key_value_heads: 2, head_dim: 6, tie_word_embeddings: true }),
  ],
  ['mistral (sliding window 3)', tiny({ model_type: 'mistral', num_key_value_heads: 2, sliding_window: 3 })],
];

/** The decoder's logits on ONNX Runtime's cpu provider (float64 unless asked). */
async function forward(
  cfg: LlamaConfig,
  w: Record<string, HostTensor>,
  ids: number[][],
  mask?: number[][],
  { dtype = 'float64', fusedKernels = false }: { dtype?: 'float32' | 'float64'; fusedKernels?: boolean } = {},
): Promise<Float64Array> {
  const g = new Graph();
  const params = new Map<string, Tensor>();
  const lookup = (name: string) => {
    const spec = w[name];
    if (!spec) throw new Error(`no weight ${name}`);
    if (!params.has(name)) params.set(name, g.input(name, dtype, spec.dims));
    return params.get(name)!;
  };
  const inputIds = g.input('input_ids', 'int64', ['B', 'T']);
  const attentionMask = mask ? g.input('attention_mask', 'int64', ['B', 'T']) : undefined;
  const { logits } = llamaForward(cfg, lookup, {
    inputIds,
    ...(attentionMask ? { attentionMask } : {}),
    fusedKernels,
  });
  // 'basic': ONNX Runtime's extended fusions store scales as float attributes (MatMulScaleFusion),
  // which would blur a float64 comparison; the graph's own math is what is checked here.
  const model = compile(g, { logits });
  nodeCounts.push(model.nodeCount);
  const session = await ort.InferenceSession.create(model.bytes, { graphOptimizationLevel: 'basic' });
  const feeds: Record<string, ort.Tensor> = {};
  for (const name of params.keys())
    feeds[name] =
      dtype === 'float32'
        ? new ort.Tensor('float32', Float32Array.from(w[name]!.data), w[name]!.dims)
        : new ort.Tensor('float64', w[name]!.data, w[name]!.dims);
  const dims = [ids.length, ids[0]!.length];
  feeds.input_ids = new ort.Tensor('int64', BigInt64Array.from(ids.flat().map(BigInt)), dims);
  if (mask) feeds.attention_mask = new ort.Tensor('int64', BigInt64Array.from(mask.flat().map(BigInt)), dims);
  return Float64Array.from((await session.run(feeds)).logits!.data as Float64Array | Float32Array);
}

/**
 * ∂/∂w of Σ logits ⊙ c (c fixed, every logit weighted differently) in float32 on the cpu provider,
 * for every weight, and the nodes of the graph that computes them.
 */
async function gradients(
  cfg: LlamaConfig,
  w: Record<string, HostTensor>,
  fusedKernels: boolean,
): Promise<{ grads: Record<string, Float32Array>; nodes: number }> {
  const g = new Graph();
  const params = new Map<string, Tensor>();
  const lookup = (name: string) => {
    if (!params.has(name)) params.set(name, g.input(name, 'float32', w[name]!.dims));
    return params.get(name)!;
  };
  const dims = [IDS.length, IDS[0]!.length];
  const inputIds = g.input('input_ids', 'int64', dims);
  const attentionMask = g.input('attention_mask', 'int64', dims);
  const { logits } = llamaForward(cfg, lookup, { inputIds, attentionMask, fusedKernels });
  const n = IDS.length * IDS[0]!.length * cfg.vocabSize;
  const c = g.constant(
    Float32Array.from({ length: n }, (_, i) => Math.sin(1.7 * i + 0.3)),
    'float32',
    logits.shape,
  );
  const names = [...params.keys()];
  const grads = grad(
    T.reduceSum(T.mul(logits, c)),
    names.map((k) => params.get(k)!),
  );
  const model = compile(g, Object.fromEntries(names.map((k, i) => [`d.${k}`, grads[i]!])));
  const session = await ort.InferenceSession.create(model.bytes);
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', BigInt64Array.from(IDS.flat().map(BigInt)), dims),
    attention_mask: new ort.Tensor('int64', BigInt64Array.from(MASK.flat().map(BigInt)), dims),
  };
  for (const k of names) feeds[k] = new ort.Tensor('float32', Float32Array.from(w[k]!.data), w[k]!.dims);
  const out = await session.run(feeds);
  return {
    grads: Object.fromEntries(names.map((k) => [k, out[`d.${k}`]!.data as Float32Array])),
    nodes: model.nodeCount,
  };
}

/** Nodes of each graph `forward` compiled, in order. */
const nodeCounts: number[] = [];

/** The largest difference from the reference's logits, relative to their largest magnitude. */
function worstVsReference(
  cfg: LlamaConfig,
  w: Record<string, HostTensor>,
  ids: number[][],
  mask: number[][],
  got: Float64Array,
) {
  let worst = 0;
  let scale = 0;
  for (const [b, row] of ids.entries()) {
    const want = referenceLogits(cfg, w, row, mask[b]).flat();
    for (const [i, v] of want.entries()) {
      worst = Math.max(worst, Math.abs(v - got[b * want.length + i]!));
      scale = Math.max(scale, Math.abs(v));
    }
  }
  expect(scale).toBeGreaterThan(0.1);
  return worst / scale;
}

const IDS = [
  [1, 5, 9, 2, 7, 3],
  [4, 4, 0, 10, 6, 8],
];
const MASK = [
  [1, 1, 1, 1, 1, 1],
  [1, 1, 1, 1, 0, 0],
];

describe('llama decoder', () => {
  for (const [name, cfg] of VARIANTS) {
    it(`${name} matches the reference forward`, async () => {
      const w = weights(cfg, 3);
      const got = await forward(cfg, w, IDS, MASK);
      expect(worstVsReference(cfg, w, IDS, MASK, got)).toBeLessThan(1e-10);
    });
  }

  it("with ONNX Runtime's fused norm and rotary kernels (inference on a device) matches the reference in float32, in fewer nodes", async () => {
    // Qwen3 has the most norms: two a layer, q and k per head, and the final one.
    const cfg = VARIANTS[3]![1];
    const w = weights(cfg, 3);
    const fused = await forward(cfg, w, IDS, MASK, { dtype: 'float32', fusedKernels: true });
    const plain = await forward(cfg, w, IDS, MASK, { dtype: 'float32' });
    // As close to the float64 reference as the unfused norm is in float32.
    expect(worstVsReference(cfg, w, IDS, MASK, fused)).toBeLessThan(1e-5);
    expect(worstVsReference(cfg, w, IDS, MASK, plain)).toBeLessThan(1e-5);
    const [fusedNodes, plainNodes] = nodeCounts.slice(-2);
    // Eight nodes (x², its mean, + ε, √, 1/·, two products) become one, for each of the 4 norms
    // of the 2 layers and the final norm; seven (two slices, a negation, a concat, two products
    // and a sum) become one for the rotary embedding of q and of k in each layer; and the angles,
    // computed once per graph, become a table.
    expect(plainNodes! - fusedNodes!).toBeGreaterThanOrEqual(
      7 * (4 * cfg.numLayers + 1) + 2 * 6 * cfg.numLayers,
    );
  });

  it("through ONNX Runtime's fused kernels (norm, rotary, Gemm) gives the unfused graph's gradients, in fewer nodes", async () => {
    const cfg = VARIANTS[3]![1];
    const w = weights(cfg, 3);
    const [fused, plain] = [await gradients(cfg, w, true), await gradients(cfg, w, false)];
    let [worst, scale] = [0, 0];
    for (const [name, want] of Object.entries(plain.grads)) {
      const got = fused.grads[name]!;
      for (const [i, v] of want.entries()) {
        worst = Math.max(worst, Math.abs(v - got[i]!));
        scale = Math.max(scale, Math.abs(v));
      }
    }
    expect(scale).toBeGreaterThan(0.1);
    expect(worst / scale).toBeLessThan(1e-5);
    // Every weight gets a gradient, norms' and embeddings' included.
    expect(Object.keys(fused.grads).sort()).toEqual(Object.keys(w).sort());
    // At least what the forward saves (the test above): the gradients take no more nodes.
    expect(plain.nodes - fused.nodes).toBeGreaterThanOrEqual(
      7 * (4 * cfg.numLayers + 1) + 2 * 6 * cfg.numLayers,
    );
  });

  it('a padded row gives its real tokens the same logits as the unpadded sequence', async () => {
    const cfg = VARIANTS[1]![1];
    const w = weights(cfg, 5);
    const full = await forward(cfg, w, [[3, 1, 4]]);
    const padded = await forward(cfg, w, [[3, 1, 4, 0, 0]], [[1, 1, 1, 0, 0]]);
    expect(Array.from(padded.subarray(0, full.length))).toEqual(
      Array.from(full).map((v) => expect.closeTo(v, 10)),
    );
  });

  it('round-trips config.json and names every problem', () => {
    const cfg = VARIANTS[2]![1];
    expect(parseLlamaConfig(toHfConfig(cfg))).toEqual(cfg);
    expect(() => tiny({ num_key_value_heads: 3 })).toThrow(/num_key_value_heads.*not a multiple/);
    expect(() => tiny({ rope_scaling: { type: 'linear', factor: 2 } })).toThrow(/rope_scaling/);
    expect(() => tiny({ hidden_act: 'gelu' })).toThrow(/hidden_act/);
    expect(() => tiny({ vocab_size: -1 })).toThrow(/vocab_size/);
    expect(() => tiny({ eos_token_id: 11 })).toThrow(/token id 11 is outside vocab_size 11/);
  });

  it("reads Qwen3's config.json as published and as transformers 5 writes it", () => {
    const qwen3 = VARIANTS[3]![1];
    expect(parseLlamaConfig(toHfConfig(qwen3))).toEqual(qwen3);
    // Qwen3-0.6B's own config.json (the keys that set the math).
    const published = parseLlamaConfig({
      architectures: ['Qwen3ForCausalLM'],
      model_type: 'qwen3',
      vocab_size: 151936,
      hidden_size: 1024,
      intermediate_size: 3072,
      num_hidden_layers: 28,
      num_attention_heads: 16,
      num_key_value_heads: 8,
      head_dim: 128,
      attention_bias: false,
      rms_norm_eps: 1e-6,
      rope_theta: 1000000,
      rope_scaling: null,
      sliding_window: null,
      use_sliding_window: false,
      max_window_layers: 28,
      tie_word_embeddings: true,
      torch_dtype: 'bfloat16',
    });
    expect(published).toMatchObject({ headDim: 128, qkNorm: true, qkvBias: false, ropeTheta: 1e6 });
    expect(published.slidingWindow).toBeUndefined();
    // Qwen3Config's head_dim default is 128, not hidden/heads.
    expect(tiny({ model_type: 'qwen3' }).headDim).toBe(128);
    expect(
      tiny({
        model_type: 'qwen3',
        rope_theta: undefined,
        rope_parameters: { rope_type: 'default', rope_theta: 5e5 },
      }).ropeTheta,
    ).toBe(5e5);
    expect(() => tiny({ model_type: 'qwen3', rope_parameters: { rope_type: 'yarn', factor: 4 } })).toThrow(
      /rope_parameters.rope_type.*'default'/,
    );
    expect(() => tiny({ model_type: 'qwen3', use_sliding_window: true, sliding_window: 4 })).toThrow(
      /use_sliding_window.*not implemented/,
    );
  });
});
