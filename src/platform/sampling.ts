/** The wire's sampling settings as the decoder's options, and a generation as the wire's Completion. */
import { randomInt } from 'node:crypto';
import { type Completion, CompletionSource, type SamplingParams } from '../gen/duel/v1/common.js';
import type { GenerateOptions, Generation } from '../models/generate.js';
import type { LlamaConfig } from '../models/llama/config.js';

/** `generate`'s options for checked SamplingParams (an unset seed draws a fresh one per call). */
export function generateOptionsOf(
  p: SamplingParams,
  config: LlamaConfig,
  signal: AbortSignal | undefined,
): GenerateOptions {
  return {
    n: Math.max(1, p.numSamples),
    maxNewTokens: p.maxNewTokens,
    temperature: p.temperature ?? 1,
    topK: p.topK,
    topP: p.topP ?? 1,
    seed: p.seed ?? randomInt(2 ** 31),
    eosIds: config.eosTokenIds,
    padId: config.padTokenId ?? 0,
    ...(signal ? { signal } : {}),
  };
}

export function completionOf(g: Generation, text: string, source: CompletionSource): Completion {
  return {
    tokenIds: g.tokens,
    text,
    tokenLogprobs: g.logprobs,
    logprob: g.logprobs.reduce((a, b) => a + b, 0),
    source,
    finished: g.finish === 'eos',
  };
}

export { CompletionSource };
