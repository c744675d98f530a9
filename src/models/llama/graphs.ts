/**
 * The decoder's inference graph in the layout Optimum and transformers.js use for
 * text-generation-with-past: inputs input_ids, attention_mask, position_ids and
 * past_key_values.N.key/value; outputs logits and present.N.key/value. One graph serves the
 * prompt (past of length 0) and every decoding step. Weights are initializers when the graph is
 * given them (what runner.ts does, and the ONNX export), otherwise graph inputs named by their
 * Hugging Face names.
 */
import {
  type ComputeDtype,
  compile,
  type Dim,
  Graph,
  inputName,
  T,
  type Tensor,
} from '../../engine/index.js';
import { castWeight, weightsFor } from '../common/precision.js';
import type { LoraTarget } from '../lora/config.js';
import { declareAdapterInputs } from '../lora/slots.js';
import type { LlamaConfig } from './config.js';
import { llamaForward } from './decoder.js';
import { type HostTensor, llamaParams } from './weights.js';

export const pastKey = (i: number) => `past_key_values.${i}.key`;
export const pastValue = (i: number) => `past_key_values.${i}.value`;
export const presentKey = (i: number) => `present.${i}.key`;
export const presentValue = (i: number) => `present.${i}.value`;

export interface DecoderGraphOptions {
  /** Weights as initializers (export) instead of inputs named by their HF names. */
  weights?: Record<string, HostTensor>;
  /**
   * Any LoRA adapter on these target layers, as inputs: each module's `lora_A` [R, in] and
   * `lora_B` [out, R] under their HF names (R, the rank, symbolic) and the scalar `lora_scale`, so
   * one compiled graph serves every adapter of that target set.
   */
  adapterInputs?: readonly LoraTarget[];
  /** Logits of the last position only ([B, 1, V]); the export keeps all positions. */
  lastOnly?: boolean;
  /**
   * Next-token draws inside the graph (with lastOnly): inputs `uniform` [B] and
   * `inv_temperature` []; outputs `next_token`/`next_logprob` (inverse CDF of softmax(z/T)) and
   * `greedy_token`/`greedy_logprob`, and `entropy` (the policy's, at temperature 1), so a decoding
   * step returns B tokens instead of B×V logits.
   */
  sampling?: boolean;
  /** ONNX Runtime's fused kernels (DecoderInputs.fusedKernels): for the webgpu provider. */
  fusedKernels?: boolean;
  /**
   * float16: the weights (every one but the norms'), activations and KV cache in half precision
   * (decoder.ts says what stays float32); the logits and the draw are float32 either way.
   * @default 'float32'
   */
  dtype?: ComputeDtype;
}

export function buildDecoderGraph(cfg: LlamaConfig, options: DecoderGraphOptions = {}) {
  const g = new Graph();
  const dtype = options.dtype ?? 'float32';
  const given = options.weights ? weightsFor(options.weights, dtype) : {};
  const params = new Map<string, Tensor>();
  for (const spec of llamaParams(cfg)) {
    const w = given[spec.name];
    // Compiled in as held, or an input (a training state's float32 weights) cast where it comes in.
    params.set(
      spec.name,
      w
        ? g.constant(w.data, w.dtype, spec.shape)
        : castWeight(spec.name, g.input(spec.name, 'float32', spec.shape), dtype),
    );
  }
  const cacheDtype = dtype;
  const inputIds = g.input('input_ids', 'int64', ['B', 'T']);
  // The past binds P; the mask, which covers past and present, binds P+T.
  const past = Array.from({ length: cfg.numLayers }, (_, i) => ({
    key: g.input(pastKey(i), cacheDtype, ['B', cfg.numKvHeads, 'P', cfg.headDim]),
    value: g.input(pastValue(i), cacheDtype, ['B', cfg.numKvHeads, 'P', cfg.headDim]),
  }));
  const attentionMask = g.input('attention_mask', 'int64', ['B', 'P+T']);
  const positionIds = g.input('position_ids', 'int64', ['B', 'T']);
  const adapterInputs = options.adapterInputs
    ? declareAdapterInputs(g, cfg, options.adapterInputs)
    : undefined;
  for (const [name, t] of adapterInputs?.tensors ?? []) params.set(name, castWeight(name, t, dtype));
  const lora = adapterInputs?.lora;
  const forward = llamaForward(cfg, (n) => params.get(n)!, {
    inputIds,
    attentionMask,
    positionIds,
    past,
    lastOnly: options.lastOnly ?? false,
    fusedKernels: options.fusedKernels ?? false,
    ...(lora ? { lora } : {}),
  });
  const { present } = forward;
  const logits = T.cast(forward.logits, 'float32');
  const outputs: Record<string, Tensor> = { logits, ...(options.sampling ? drawNext(logits) : {}) };
  present.forEach((p, i) => {
    outputs[presentKey(i)] = p.key;
    outputs[presentValue(i)] = p.value;
  });
  return { graph: g, outputs };
}

/** What a decoding step's in-graph draw gives back on every run (DecoderGraphOptions.sampling). */
export const DRAW_OUTPUTS = [
  'next_token',
  'next_logprob',
  'greedy_token',
  'greedy_logprob',
  'entropy',
] as const;

/**
 * Untruncated sampling and greedy choice from [B, 1, V] logits, with the policy's log-probs.
 *
 * Written so that nothing after the forward pass leaves the device: ONNX Runtime's WebGPU provider
 * has no int64 ReduceSum or Min, and it runs an int64 id reshaped into a gather index on the CPU,
 * so either would stop the device mid-step to copy ids across and back (`duel bench placement`).
 * The draw is counted in float32 (exact below 2^24 entries) and picked out with an equality mask;
 * the greedy token's log-prob is the largest log-prob, the same float as at its argmax because
 * log-softmax shifts every logit by one value. The ids become int64 only as outputs.
 */
function drawNext(logits: Tensor): Record<(typeof DRAW_OUTPUTS)[number], Tensor> {
  const g = logits.graph;
  const [b, , v] = logits.shape as [Dim, Dim, number];
  const z = T.reshape(logits, [b, v]);
  const uniform = g.input('uniform', 'float32', [b]);
  const invTemperature = g.input('inv_temperature', 'float32', []);
  const logp = T.logSoftmax(z, -1);
  const cdf = T.cumsum(T.softmax(T.mul(z, invTemperature), -1), 1);
  // The draw is the number of CDF entries below u; rounding can leave cdf[V−1] just under 1.
  const below = T.reduceSum(T.cast(T.less(cdf, T.unsqueeze(uniform, 1)), 'float32'), 1);
  const next = T.minimum(below, v - 1);
  const ids = g.constant(
    Float32Array.from({ length: v }, (_, i) => i),
    'float32',
    [v],
  );
  const nextLogprob = T.reduceSum(T.where(T.equal(ids, T.unsqueeze(next, 1)), logp, 0), -1);
  // The policy's next-token entropy at temperature 1 (a per-round metric).
  const entropy = T.neg(T.reduceSum(T.mul(T.exp(logp), logp), -1));
  return {
    next_token: T.cast(next, 'int64'),
    next_logprob: nextLogprob,
    greedy_token: T.argmax(z, -1),
    greedy_logprob: T.reduceMax(logp, -1),
    entropy,
  };
}

/** Per-step outputs of a whole generation in one run (buildGenerationLoop): [steps, B] each. */
export const GENERATION_OUTPUTS = ['tokens', 'logprobs', 'entropies'] as const;

/**
 * A whole generation as one ONNX Loop (engine/loop.ts): the decoding step with its in-graph draw
 * (buildDecoderGraph's `sampling`), run over the prompt first and then once per new token, with
 * the ids, mask, positions, KV cache and each row's `done` carried from step to step. Inputs: the
 * prompt step's `input_ids`, `attention_mask`, `position_ids` and empty `past_key_values.*`;
 * `done` [B] (0); `uniform` [S, B], one draw per step and row; `inv_temperature`, `greedy` (1:
 * argmax instead of a draw), `eos_ids` [E] and `pad_id`. A row that drew an EOS id is done: it is
 * fed the pad id from then on, as `generate` feeds it, and the loop stops when every row is done.
 * Out: GENERATION_OUTPUTS, [steps, B]. One run per generation: what a provider whose state crosses
 * to the device at every run (cuda) needs.
 */
export function buildGenerationLoop(
  cfg: LlamaConfig,
  options: Omit<DecoderGraphOptions, 'lastOnly' | 'sampling'>,
) {
  const { graph: g, outputs } = buildDecoderGraph(cfg, { ...options, lastOnly: true, sampling: true });
  const byName = new Map(g.inputs.map((t) => [inputName(t), t]));
  const input = (name: string) => byName.get(name)!;
  const done = g.input('done', 'float32', ['B']);
  const eos = g.input('eos_ids', 'int64', ['E']);
  const pad = g.input('pad_id', 'int64', []);
  const greedy = T.greater(g.input('greedy', 'float32', []), 0);
  const token = T.where(greedy, outputs.greedy_token!, outputs.next_token!);
  const drewEos = T.greater(
    T.reduceSum(T.cast(T.equal(T.unsqueeze(token, 1), T.unsqueeze(eos, 0)), 'float32'), 1),
    0,
  );
  const doneAfter = T.maximum(done, T.cast(drewEos, 'float32'));
  const ids = input('input_ids');
  const carried = [
    // A row done before this step is fed padding; one that just drew EOS is fed its EOS.
    { input: ids, next: T.unsqueeze(T.where(T.greater(done, 0), pad, token), 1) },
    {
      input: input('attention_mask'),
      next: T.concat([input('attention_mask'), T.expand(T.scalar(g, 1, 'int64'), [ids.shape[0]!, 1])], 1),
    },
    { input: input('position_ids'), next: T.add(T.reduceMax(input('position_ids'), 1, true), 1) },
    ...Array.from({ length: cfg.numLayers }, (_, i) => [
      { input: input(pastKey(i)), next: outputs[presentKey(i)]! },
      { input: input(pastValue(i)), next: outputs[presentValue(i)]! },
    ]).flat(),
    { input: done, next: doneAfter },
  ];
  const uniform = input('uniform');
  const inLoop = new Set([...carried.map((c) => c.input), uniform]);
  return {
    carried,
    sliced: [uniform],
    outer: g.inputs.filter((t) => !inLoop.has(t)),
    scanned: {
      tokens: token,
      logprobs: T.where(greedy, outputs.greedy_logprob!, outputs.next_logprob!),
      entropies: outputs.entropy!,
    },
    goOn: T.greater(T.reduceSum(T.sub(1, doneAfter)), 0),
  };
}

/** The ONNX model transformers.js loads as `onnx/model.onnx` (weights inside). */
export function exportDecoderOnnx(cfg: LlamaConfig, weights: Record<string, HostTensor>) {
  const { graph, outputs } = buildDecoderGraph(cfg, { weights });
  return compile(graph, outputs, 'duel_llama');
}
