/**
 * Next-token choice from one row of logits, as transformers' generate does it: temperature
 * (0 = greedy), then top-k, then top-p (the smallest set of most likely tokens whose probability
 * reaches p, at least one), renormalised, one uniform draw by inverse CDF. The uniform comes from
 * the caller's per-sample stream (`streamSeed`), so a seed reproduces a sample wherever it runs.
 */

export interface SamplingOptions {
  /** 0 picks the most likely token. */
  temperature: number;
  /** Keep the k most likely tokens; 0 keeps all. */
  topK: number;
  /** Keep the most likely tokens whose total probability reaches p; 1 keeps all. */
  topP: number;
}

/** The tokens a draw may pick and their probabilities (summing to 1), most likely first. */
export function samplingDistribution(
  logits: ArrayLike<number>,
  o: SamplingOptions,
): { ids: number[]; probs: number[] } {
  const v = logits.length;
  if (o.temperature === 0) return { ids: [argmax(logits)], probs: [1] };
  const order = Array.from({ length: v }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]! || a - b);
  const kept = o.topK > 0 ? order.slice(0, o.topK) : order;
  const max = logits[kept[0]!]!;
  let probs = kept.map((i) => Math.exp((logits[i]! - max) / o.temperature));
  let z = probs.reduce((a, b) => a + b, 0);
  probs = probs.map((p) => p / z);
  let n = probs.length;
  if (o.topP < 1) {
    let cum = 0;
    n = 0;
    while (n < probs.length && cum < o.topP) cum += probs[n++]!;
    n = Math.max(1, n);
  }
  const ids = kept.slice(0, n);
  probs = probs.slice(0, n);
  z = probs.reduce((a, b) => a + b, 0);
  return { ids, probs: probs.map((p) => p / z) };
}

export function drawToken(logits: ArrayLike<number>, o: SamplingOptions, uniform: number): number {
  const { ids, probs } = samplingDistribution(logits, o);
  let cum = 0;
  for (let i = 0; i < ids.length; i++) {
    cum += probs[i]!;
    if (uniform < cum) return ids[i]!;
  }
  return ids[ids.length - 1]!;
}

export function argmax(xs: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < xs.length; i++) if (xs[i]! > xs[best]!) best = i;
  return best;
}

/** log softmax(logits)[id], computed stably. */
export function logSoftmaxAt(logits: ArrayLike<number>, id: number): number {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]!);
  let z = 0;
  for (let i = 0; i < logits.length; i++) z += Math.exp(logits[i]! - max);
  return logits[id]! - max - Math.log(z);
}

/**
 * The 32-bit seed of one sample's stream: a hash of the run's seed, the prompt's tokens and the
 * sample's index, so a sample depends on neither its batch nor the shard it was sent to.
 */
export function streamSeed(seed: number, prompt: readonly number[], sample: number): number {
  let h = 0x811c9dc5 ^ (seed >>> 0); // FNV-1a over the seed, the tokens and the index
  for (const k of [...prompt, -1, sample]) {
    h = Math.imul(h ^ (k >>> 0), 0x01000193);
  }
  // murmur3's finaliser spreads the last bits over the whole word
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
