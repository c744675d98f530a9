/**
 * Token log-probabilities of given targets under the decoder's logits: the quantity every loss
 * in duel is written in (SFT's cross-entropy, the preference losses' sequence log-ratios).
 */
import { T, type Tensor } from '../../engine/index.js';
import type { LlamaConfig } from './config.js';
import { type DecoderInputs, llamaTrunk, lmHead, type Weights } from './decoder.js';

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
  /** DecoderInputs.checkpointing; the LM head and its log-softmax are one more segment. */
  checkpointing?: boolean;
}

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
    return T.mul(tokenLogprobs(logits, inputs.targets), inputs.targetMask);
  };
  const perToken = model.checkpointing
    ? (T.checkpoint([hidden], ([h]) => [logprobsOf(h!)])[0] as Tensor)
    : logprobsOf(hidden);
  return { perToken, summed: T.reduceSum(perToken, -1) };
}
