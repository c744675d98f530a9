/**
 * Token log-probabilities of given targets under the decoder's logits: the quantity every loss
 * in duel is written in (SFT's cross-entropy, the preference losses' sequence log-ratios).
 */
import { T, type Tensor } from '../../engine/index.js';
import { linear } from '../common/linear.js';
import type { LlamaConfig } from './config.js';
import { type DecoderInputs, llamaTrunk, lmHead, scaled, type Weights } from './decoder.js';

/**
 * log p(targets[b, t] | logits[b, t, :]) as [B, T], in float32 whatever the logits' dtype: a
 * half-precision log-softmax over a vocabulary loses the small differences the losses are made of
 * (transformers upcasts its logits for the loss the same way).
 */
export function tokenLogprobs(logits: Tensor, targets: Tensor): Tensor {
  const wide = logits.dtype === 'float16' ? T.cast(logits, 'float32') : logits;
  return T.takeLast(T.logSoftmax(wide, -1), targets);
}

export interface SequenceInputs {
  /** int64 [B, T]: prompt then completion, right-padded. */
  inputIds: Tensor;
  /** [B, T]: 1 on prompt and completion tokens, 0 on padding. */
  attentionMask: Tensor;
  /** int64 [B, T]: the token after each position (input_ids shifted left by one). */
  targets: Tensor;
  /** float [B, T]: 1 where the target is a completion token; prompt and padding are masked. */
  targetMask: Tensor;
  /** A LoRA adapter on the decoder (DecoderInputs.lora). */
  lora?: DecoderInputs['lora'];
  /** DecoderInputs.fusedKernels. */
  fusedKernels?: boolean;
  /**
   * DecoderInputs.checkpointing; the LM head and its log-softmax are recomputed too, a slice of
   * the vocabulary at a time when it has more than headChunk rows.
   */
  checkpointing?: boolean;
  /** With checkpointing, the vocabulary rows a slice of the head computes (HEAD_CHUNK by default). */
  headChunk?: number;
}

/**
 * Rows of the LM head recomputed together under checkpointing. At 4 096 tokens a step a slice's
 * float32 logits are 268 MB, where Qwen2.5's whole vocabulary (151 936) is 2.5 GB a tensor and
 * the log-softmax's backward holds three of them; more slices cost a few small nodes each.
 */
export const HEAD_CHUNK = 16_384;

/** Per-token log-probs of the completion tokens ([B, T], 0 where masked) and their sum per row. */
export function sequenceLogprobs(cfg: LlamaConfig, w: Weights, inputs: SequenceInputs) {
  const model = {
    ...(inputs.lora ? { lora: inputs.lora } : {}),
    fusedKernels: inputs.fusedKernels ?? false,
    checkpointing: inputs.checkpointing ?? false,
  };
  const { hidden } = llamaTrunk(cfg, w, {
    inputIds: inputs.inputIds,
    attentionMask: inputs.attentionMask,
    ...model,
  });
  // The [B·T, vocab] logits and their log-softmax are the largest activations of all.
  const logprobsOf = (h: Tensor) => {
    const logits = T.reshape(lmHead(cfg, w, h, model), [...inputs.targets.shape, cfg.vocabSize]);
    return tokenLogprobs(logits, inputs.targets);
  };
  const chunk = inputs.headChunk ?? HEAD_CHUNK;
  const logprobs = !model.checkpointing
    ? logprobsOf(hidden)
    : cfg.vocabSize <= chunk
      ? (T.checkpoint([hidden], ([h]) => [logprobsOf(h!)])[0] as Tensor)
      : T.reshape(headInSlices(cfg, w, hidden, inputs.targets, model, chunk), inputs.targets.shape);
  const perToken = T.mul(logprobs, inputs.targetMask);
  return { perToken, summed: T.reduceSum(perToken, -1) };
}

/**
 * log p(target) = logit[target] − log Σ_v exp(logit[v]) with the head computed a slice of the
 * vocabulary at a time, each slice a checkpointed segment: the backward pass holds one slice's
 * logits, never the [B·T, vocab] grid. A slice gives its log-sum-exp and its logit of the target
 * (0 where the target lies in another slice); the slices' sums combine exactly. The weight's
 * gradient is the slices' gradients joined (Split's rule), not a sum of vocabulary-sized zeros.
 * Sliced by vocabulary, not by tokens as Liger-Kernel's fused linear cross-entropy is: a graph's
 * token count is symbolic (one graph serves every batch shape), its vocabulary is not.
 */
function headInSlices(
  cfg: LlamaConfig,
  w: Weights,
  hidden: Tensor,
  targets: Tensor,
  model: Pick<DecoderInputs, 'lora' | 'fusedKernels'>,
  chunk: number,
): Tensor {
  const h = T.reshape(hidden, [-1, cfg.hiddenSize]);
  const target = T.reshape(targets, [-1]);
  const sizes = Array.from({ length: Math.ceil(cfg.vocabSize / chunk) }, (_, i) =>
    Math.min(chunk, cfg.vocabSize - i * chunk),
  );
  const weight = T.splitSizes(
    cfg.tieWordEmbeddings ? w('model.embed_tokens.weight') : w('lm_head.weight'),
    0,
    sizes,
  );
  const lora = model.lora?.targets.has('lm_head') ? model.lora : undefined;
  const loraB = lora ? T.splitSizes(w('lm_head.lora_B.weight'), 0, sizes) : [];
  const fused = model.fusedKernels ?? false;
  // The LoRA path's [B·T, r] projection is shared by every slice, so it is computed once.
  const down = lora ? linear(h, w('lm_head.lora_A.weight'), undefined, fused) : undefined;
  const parts = sizes.map((size, i) => {
    const start = i * chunk;
    return T.checkpoint(down ? [h, down] : [h], ([x, d]) => {
      let logits = linear(x!, weight[i]!, undefined, fused);
      if (d) logits = T.add(logits, scaled(linear(d, loraB[i]!, undefined, fused), lora!.scale));
      // As tokenLogprobs: a half-precision log-sum-exp over the vocabulary loses what losses need.
      const wide = logits.dtype === 'float16' ? T.cast(logits, 'float32') : logits;
      const local = T.sub(target, T.scalar(target.graph, start, 'int64'));
      const inside = T.and(T.greaterOrEqual(local, 0), T.less(local, size));
      const picked = T.takeLast(wide, T.where(inside, local, 0));
      return [T.unsqueeze(T.logsumexp(wide, -1), -1), T.where(inside, picked, 0)];
    }) as [Tensor, Tensor];
  });
  const lse = T.logsumexp(
    T.concat(
      parts.map(([l]) => l),
      -1,
    ),
    -1,
  );
  const picked = parts.map(([, p]) => p).reduce((a, b) => T.add(a, b));
  return T.sub(picked, lse);
}
