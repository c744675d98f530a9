/** Request validation for PolicySamplerService: every problem named by its field path. */
import type { LogprobsRequest, SampleRequest } from '../../src/gen/duel/v1/sampler.js';
import { checkModelRef, checkSampling, type SamplingLimits } from '../../src/platform/contract-checks.js';
import { Violations } from '../../src/platform/violations.js';

export interface SamplerLimits extends SamplingLimits {
  /** Prompts (or sequences) in one request. */
  maxPrompts: number;
  /** Tokens in one prompt or completion. */
  maxSequenceTokens: number;
}

export const DEFAULT_SAMPLER_LIMITS: SamplerLimits = {
  maxPrompts: 1024,
  maxSamples: 64,
  maxNewTokens: 4096,
  maxSequenceTokens: 8192,
};

export function validateSampleRequest(req: SampleRequest, limits: SamplerLimits): void {
  const v = new Violations();
  checkModelRef(v, req.model, 'model');
  if (v.check(req.prompts.length > 0, 'prompts', 'must hold at least one prompt')) {
    v.check(
      req.prompts.length <= limits.maxPrompts,
      'prompts',
      `must hold at most ${limits.maxPrompts} prompts, got ${req.prompts.length}`,
    );
  }
  req.prompts.forEach((p, i) => {
    v.check(p.tokenIds.length > 0 || p.text.length > 0, `prompts[${i}]`, 'needs token_ids or text');
    v.check(
      p.tokenIds.length <= limits.maxSequenceTokens,
      `prompts[${i}].token_ids`,
      `must hold at most ${limits.maxSequenceTokens} tokens, got ${p.tokenIds.length}`,
    );
  });
  checkSampling(v, req.params, 'params', limits);
  if (req.mixtureReference !== undefined) {
    checkModelRef(v, req.mixtureReference, 'mixture_reference');
    v.check(
      req.mixtureCoef >= 0 && req.mixtureCoef <= 1,
      'mixture_coef',
      `must be in [0, 1], got ${req.mixtureCoef}`,
    );
  } else {
    v.check(req.mixtureCoef === 0, 'mixture_coef', 'is set but mixture_reference is not');
  }
  v.throwIfAny();
}

export function validateLogprobsRequest(req: LogprobsRequest, limits: SamplerLimits): void {
  const v = new Violations();
  checkModelRef(v, req.model, 'model');
  v.check(req.sequences.length > 0, 'sequences', 'must hold at least one sequence');
  v.check(
    req.sequences.length <= limits.maxPrompts,
    'sequences',
    `must hold at most ${limits.maxPrompts} sequences, got ${req.sequences.length}`,
  );
  req.sequences.forEach((s, i) => {
    v.check(s.promptIds.length > 0, `sequences[${i}].prompt_ids`, 'must not be empty');
    v.check(s.completionIds.length > 0, `sequences[${i}].completion_ids`, 'must not be empty');
    v.check(
      s.promptIds.length + s.completionIds.length <= limits.maxSequenceTokens,
      `sequences[${i}]`,
      `prompt and completion must total at most ${limits.maxSequenceTokens} tokens`,
    );
  });
  v.throwIfAny();
}
