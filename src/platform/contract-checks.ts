/**
 * Checks for the message types every contract shares (references, sampling parameters, the
 * preference matrix). Each adds violations naming the field path the caller passed in, so a
 * service's validator composes them and the client learns exactly which field broke which rule.
 */
import type { ArtifactRef, LoraSpec, Matrix, ModelRef, SamplingParams } from '../gen/duel/v1/common.js';
import { LORA_TARGETS } from '../models/lora/config.js';
import type { Violations } from './violations.js';

const SHA256 = /^[0-9a-f]{64}$/;
const SCHEMES = /^(file|nats):\/\//;

function checkArtifact(v: Violations, { uri, sha256 }: ArtifactRef, field: string): void {
  v.check(SCHEMES.test(uri), `${field}.uri`, `must be a file:// or nats:// URI, got ${JSON.stringify(uri)}`);
  v.check(SHA256.test(sha256), `${field}.sha256`, 'must be 64 lower-case hex digits');
}

export function checkModelRef(v: Violations, ref: ModelRef | undefined, field: string): void {
  if (!v.check(ref !== undefined && ref.artifact !== undefined, field, 'is required')) return;
  checkArtifact(v, ref!.artifact!, `${field}.artifact`);
  if (ref!.adapter) checkArtifact(v, ref!.adapter, `${field}.adapter`);
}

/** A LoRA shape to train: a rank, a positive alpha, and targets the decoder has. */
export function checkLora(v: Violations, lora: LoraSpec, field: string): void {
  v.check(lora.rank >= 1, `${field}.rank`, `must be at least 1, got ${lora.rank}`);
  v.check(lora.alpha > 0, `${field}.alpha`, `must be positive, got ${lora.alpha}`);
  v.check(lora.targets.length > 0, `${field}.targets`, 'must name at least one linear layer');
  for (const t of lora.targets)
    v.check(
      (LORA_TARGETS as readonly string[]).includes(t),
      `${field}.targets`,
      `'${t}' is not a linear layer of the decoder (${LORA_TARGETS.join(', ')})`,
    );
}

export interface SamplingLimits {
  maxSamples: number;
  maxNewTokens: number;
}

export function checkSampling(
  v: Violations,
  params: SamplingParams | undefined,
  field: string,
  limits: SamplingLimits,
): void {
  if (!v.check(params !== undefined, field, 'is required')) return;
  const p = params!;
  v.check(
    p.numSamples <= limits.maxSamples,
    `${field}.num_samples`,
    `must be at most ${limits.maxSamples}, got ${p.numSamples}`,
  );
  v.check(
    p.maxNewTokens >= 1 && p.maxNewTokens <= limits.maxNewTokens,
    `${field}.max_new_tokens`,
    `must be in [1, ${limits.maxNewTokens}], got ${p.maxNewTokens}`,
  );
  if (p.temperature !== undefined) {
    v.check(
      Number.isFinite(p.temperature) && p.temperature >= 0,
      `${field}.temperature`,
      `must be a finite number >= 0 (0 is greedy), got ${p.temperature}`,
    );
  }
  if (p.topP !== undefined) {
    v.check(p.topP > 0 && p.topP <= 1, `${field}.top_p`, `must be in (0, 1], got ${p.topP}`);
  }
}

/** A K×K preference matrix: finite entries in [0, 1], diagonal ½, P[i][j] + P[j][i] = 1. */
export function checkPrefs(
  v: Violations,
  m: Matrix | undefined,
  k: number,
  field: string,
  tolerance = 1e-6,
): void {
  if (!v.check(m !== undefined, field, 'is required')) return;
  const { rows, cols, values } = m!;
  if (
    !v.check(
      rows === k && cols === k,
      field,
      `must be ${k}×${k} (one row per completion), got ${rows}×${cols}`,
    )
  )
    return;
  if (
    !v.check(values.length === k * k, `${field}.values`, `must hold ${k * k} numbers, got ${values.length}`)
  )
    return;
  for (let i = 0; i < k; i++) {
    for (let j = 0; j < k; j++) {
      const p = values[i * k + j]!;
      const q = values[j * k + i]!;
      const at = `${field}[${i}][${j}]`;
      if (!v.check(Number.isFinite(p) && p >= 0 && p <= 1, at, `must be a probability in [0, 1], got ${p}`))
        return;
      if (i === j && !v.check(Math.abs(p - 0.5) <= tolerance, at, `diagonal must be 0.5, got ${p}`)) return;
      if (!v.check(Math.abs(p + q - 1) <= tolerance, at, `P[i][j] + P[j][i] must be 1, got ${p} + ${q}`))
        return;
    }
  }
}
