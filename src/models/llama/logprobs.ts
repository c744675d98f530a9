/**
 * Token log-probabilities of given targets under the decoder's logits: the quantity every loss
 * in duel is written in (SFT's cross-entropy, the preference losses' sequence log-ratios).
 */
import { T, type Tensor } from '../../engine/index.js';

/** log p(targets[b, t] | logits[b, t, :]) as [B, T]. */
export function tokenLogprobs(logits: Tensor, targets: Tensor): Tensor {
  return T.takeLast(T.logSoftmax(logits, -1), targets);
}
