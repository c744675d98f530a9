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

/**
 * The tokens a draw may pick and their probabilities (summing to 1). Truncated distributions list
 * tokens most likely first; the untruncated one lists them in id order (no sort needed: decoding
 * a 32k vocabulary for a batch of 128 rows would otherwise sort four million logits a step).
 */
export function samplingDistribution(
  logits: ArrayLike<number>,
  o: SamplingOptions,
): { ids: number[]; probs: number[] } {
  const v = logits.length;
  if (o.temperature === 0) return { ids: [argmax(logits)], probs: [1] };
  let ids: number[];
  if (o.topK > 0 && o.topK < v) ids = topKIndices(logits, o.topK);
  else if (o.topP < 1)
    ids = Array.from({ length: v }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]! || a - b);
  else ids = Array.from({ length: v }, (_, i) => i);
  let max = Number.NEGATIVE_INFINITY;
  for (const i of ids) max = Math.max(max, logits[i]!);
  let probs = ids.map((i) => Math.exp((logits[i]! - max) / o.temperature));
  let z = probs.reduce((a, b) => a + b, 0);
  probs = probs.map((p) => p / z);
  if (o.topP < 1) {
    let cum = 0;
    let n = 0;
    while (n < probs.length && cum < o.topP) cum += probs[n++]!;
    n = Math.max(1, n);
    ids = ids.slice(0, n);
    probs = probs.slice(0, n);
    z = probs.reduce((a, b) => a + b, 0);
    probs = probs.map((p) => p / z);
  }
  return { ids, probs };
}

/** The k largest logits' ids, largest first (ties: lower id first), without sorting the rest. */
function topKIndices(logits: ArrayLike<number>, k: number): number[] {
  const better = (a: number, b: number) => logits[a]! > logits[b]! || (logits[a] === logits[b] && a < b);
  const best: number[] = [];
  for (let i = 0; i < logits.length; i++) {
    if (best.length === k && !better(i, best[k - 1]!)) continue;
    let at = best.length === k ? k - 1 : best.length;
    while (at > 0 && better(i, best[at - 1]!)) {
      best[at] = best[at - 1]!;
      at--;
    }
    best[at] = i;
    if (best.length > k) best.length = k;
  }
  return best;
}

export function drawToken(logits: ArrayLike<number>, o: SamplingOptions, uniform: number): number {
  if (o.temperature > 0 && (o.topK === 0 || o.topK >= logits.length) && o.topP >= 1)
    return drawUntruncated(logits, o.temperature, uniform);
  const { ids, probs } = samplingDistribution(logits, o);
  let cum = 0;
  for (let i = 0; i < ids.length; i++) {
    cum += probs[i]!;
    if (uniform < cum) return ids[i]!;
  }
  return ids[ids.length - 1]!;
}

/** The untruncated draw in two passes and no allocation: the hot path of self-play sampling. */
function drawUntruncated(logits: ArrayLike<number>, temperature: number, uniform: number): number {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let z = 0;
  for (let i = 0; i < logits.length; i++) z += Math.exp((logits[i]! - max) / temperature);
  const target = uniform * z;
  let cum = 0;
  for (let i = 0; i < logits.length; i++) {
    cum += Math.exp((logits[i]! - max) / temperature);
    if (target < cum) return i;
  }
  return logits.length - 1;
}

export function argmax(xs: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < xs.length; i++) if (xs[i]! > xs[best]!) best = i;
  return best;
}

/** −Σ p log p of softmax(logits), computed stably. */
export function entropyOf(logits: ArrayLike<number>): number {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]!);
  let z = 0;
  let s = 0;
  for (let i = 0; i < logits.length; i++) {
    const e = Math.exp(logits[i]! - max);
    z += e;
    s += e * (logits[i]! - max);
  }
  return Math.log(z) - s / z;
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
