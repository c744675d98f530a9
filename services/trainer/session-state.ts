/**
 * A training session's state as an artifact directory (what SaveState answers, LoadState reads and
 * the journal's snapshots are): `session.json` (the format, the base model, the optimizer, the
 * counters) and `state.safetensors` (every tensor of the training state — parameters, optimizer
 * slots, gradients accumulated since the last optimizer step — under the engine's state keys).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type LossScaleState,
  readSafetensors,
  type TrainingSnapshot,
  type WireTensor,
  writeSafetensors,
  writeSafetensorsAsync,
} from '../../src/engine/index.js';
import { DuelError } from '../../src/errors.js';
import { LoraSpec, ModelRef, OptimizerConfig } from '../../src/gen/duel/v1/common.js';
import { type ArtifactManifest, manifestFrom, sha256 } from '../../src/platform/artifacts.js';
import { crashPoint } from '../../src/platform/crash-point.js';

const SESSION_STATE_FORMAT = 'duel.training-session-state/1';
const META = 'session.json';
const TENSORS = 'state.safetensors';

export interface SessionState {
  base: ModelRef;
  optimizer: OptimizerConfig;
  /** The session's seed (what its pairwise losses draw from). */
  seed: number;
  /** A LoRA session's adapter shape (then the state's parameters are the adapter's). */
  lora: LoraSpec | undefined;
  snapshot: TrainingSnapshot;
}

const tensorsOf = (s: SessionState) =>
  new Map(
    Object.entries(s.snapshot.tensors).map(([k, t]) => [k, { dtype: t.dtype, shape: t.dims, data: t.data }]),
  );

const metaOf = (s: SessionState) =>
  `${JSON.stringify(
    {
      format: SESSION_STATE_FORMAT,
      base: ModelRef.toJSON(s.base),
      optimizer: OptimizerConfig.toJSON(s.optimizer),
      seed: s.seed,
      ...(s.lora ? { lora: LoraSpec.toJSON(s.lora) } : {}),
      steps: s.snapshot.steps,
      pending_loss: s.snapshot.pendingLoss,
      // A float16 session's loss scale, so a restored session scales (and skips) as it would have.
      ...(s.snapshot.lossScale
        ? { loss_scale: { scale: s.snapshot.lossScale.scale, good_steps: s.snapshot.lossScale.goodSteps } }
        : {}),
    },
    null,
    2,
  )}\n`;

export function writeSessionState(dir: string, s: SessionState): void {
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, TENSORS), tensorsOf(s));
  writeFileSync(join(dir, META), metaOf(s));
}

/**
 * writeSessionState off the event loop's path (the tensors written by libuv's threads, hashed a
 * chunk at a time), resolving to the artifact manifest of what it wrote: how a snapshot is written
 * while the session's next steps run.
 */
export async function writeSessionStateAsync(dir: string, s: SessionState): Promise<ArtifactManifest> {
  await mkdir(dir, { recursive: true });
  const tensors = await writeSafetensorsAsync(join(dir, TENSORS), tensorsOf(s));
  // Where the fault test kills a trainer: half an artifact on disk, the record not yet changed.
  crashPoint('trainer.snapshot.writing');
  const meta = metaOf(s);
  await writeFile(join(dir, META), meta);
  return manifestFrom({
    [META]: { bytes: Buffer.byteLength(meta), sha256: sha256(meta) },
    [TENSORS]: tensors,
  });
}

/** Reads a state directory; anything that is not one is INVALID_ARGUMENT naming `field`. */
export function readSessionState(dir: string, field = 'state'): SessionState {
  const bad = (description: string) => DuelError.invalidArgument([{ field, description }]);
  if (!existsSync(join(dir, META)) || !existsSync(join(dir, TENSORS)))
    throw bad(`is not a training session state (${META} and ${TENSORS} expected)`);
  let meta: Record<string, unknown>;
  try {
    meta = JSON.parse(readFileSync(join(dir, META), 'utf8'));
  } catch (e) {
    throw bad(`${META} is not JSON: ${(e as Error).message}`);
  }
  if (meta.format !== SESSION_STATE_FORMAT)
    throw bad(`${META} has format ${JSON.stringify(meta.format)}, expected '${SESSION_STATE_FORMAT}'`);
  const steps = meta.steps;
  const pendingLoss = meta.pending_loss;
  if (!Number.isInteger(steps) || (steps as number) < 0) throw bad(`${META}: steps must be a count`);
  if (typeof pendingLoss !== 'number') throw bad(`${META}: pending_loss must be a number`);
  const seed = meta.seed ?? 0;
  if (!Number.isInteger(seed) || (seed as number) < 0) throw bad(`${META}: seed must be a count`);
  const base = ModelRef.fromJSON(meta.base);
  if (!base.artifact) throw bad(`${META}: base has no artifact`);
  const lossScale = meta.loss_scale === undefined ? undefined : lossScaleOf(meta.loss_scale, bad);
  const tensors: Record<string, WireTensor> = {};
  for (const [k, t] of readSafetensors(join(dir, TENSORS)).tensors)
    tensors[k] = { dtype: t.dtype, dims: t.shape, data: t.data } as WireTensor;
  return {
    base,
    optimizer: OptimizerConfig.fromJSON(meta.optimizer),
    seed: seed as number,
    lora: meta.lora === undefined ? undefined : LoraSpec.fromJSON(meta.lora),
    snapshot: { tensors, steps: steps as number, pendingLoss, ...(lossScale ? { lossScale } : {}) },
  };
}

function lossScaleOf(raw: unknown, bad: (description: string) => DuelError): LossScaleState {
  const { scale, good_steps: goodSteps } = (raw ?? {}) as Record<string, unknown>;
  if (typeof scale !== 'number' || !(scale > 0) || !Number.isFinite(scale))
    throw bad(`${META}: loss_scale.scale must be a positive number`);
  if (!Number.isInteger(goodSteps) || (goodSteps as number) < 0)
    throw bad(`${META}: loss_scale.good_steps must be a count`);
  return { scale, goodSteps: goodSteps as number };
}
