/**
 * TrainerService: a thin adapter from the gRPC contract to src/algorithms. TrainRound receives the
 * round's config, then its records, trains one round from the policy checkpoint (also π_t) and
 * publishes the result into the artifact store under `output_uri` (a name inside the store's
 * root), answering with its CheckpointRef. A diverged round publishes nothing and fails with
 * FAILED_PRECONDITION. One round trains at a time; a second is RESOURCE_EXHAUSTED.
 *
 * A repeated request is answered without training: the checkpoint records the sha256 of the
 * request that made it (config and records, as encoded), and a TrainRound whose output already
 * exists with the same request digest gets that checkpoint back. This is what lets a restarted
 * orchestrator repeat a round's train stage without training the round twice.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseSets, type RoundRecord } from '../../src/algorithms/recipes/index.js';
import type { RoundMetrics } from '../../src/algorithms/steps.js';
import { trainRound } from '../../src/algorithms/train-round.js';
import {
  loopSettings,
  parseTrainingSettings,
  settingsFromWire,
  type TrainingSettings,
} from '../../src/algorithms/training-settings.js';
import type { LossScaleSpec, Runtime } from '../../src/engine/index.js';
import { DuelError } from '../../src/errors.js';
import {
  type CheckpointRef,
  type LoraSpec,
  type ModelRef,
  RoundRecord as WireRecord,
} from '../../src/gen/duel/v1/common.js';
import {
  type GetStatusResponse,
  TrainerServiceService,
  TrainerState,
  TrainRoundConfig,
  type TrainRoundRequest,
  type TrainRoundResponse,
} from '../../src/gen/duel/v1/trainer.js';
import type { LlamaConfig } from '../../src/models/llama/config.js';
import {
  type Adapter,
  initAdapter,
  mergeAdapter,
  readAdapterDir,
  writeAdapterDir,
} from '../../src/models/lora/adapter.js';
import { LORA_TARGETS, type LoraConfig } from '../../src/models/lora/config.js';
import { loadModelDir, saveModelDir } from '../../src/models/model-dir.js';
import {
  type ArtifactStore,
  listFiles,
  type ResolveArtifact,
  resolveFileArtifact,
} from '../../src/platform/artifacts.js';
import { checkLora, checkModelRef } from '../../src/platform/contract-checks.js';
import type { CallContext } from '../../src/platform/grpc/handlers.js';
import { service } from '../../src/platform/grpc/server.js';
import type { ServiceMetrics } from '../../src/platform/metrics.js';
import { spanEvent } from '../../src/platform/tracing.js';
import { Violations } from '../../src/platform/violations.js';

/**
 * A record of the wire as the trainer's record: token ids (the sampler sends them), and for a
 * `stale` record (drawn from an older policy than the one trained) each completion's log-prob
 * under the policy that drew it, which an importance-weighted loss reads.
 */
export function recordOf(r: WireRecord, field: string, stale = false): RoundRecord {
  const k = r.completions.length;
  const m = r.prefs;
  if (m && (m.rows !== k || m.cols !== k || m.values.length !== k * k))
    throw DuelError.invalidArgument([{ field: `${field}.prefs`, description: `must be a ${k}×${k} matrix` }]);
  return {
    prompt_ids: [...r.promptIds],
    completion_ids: r.completions.map((c) => [...c.tokenIds]),
    prefs: m ? Array.from({ length: k }, (_, a) => m.values.slice(a * k, (a + 1) * k)) : [],
    ...(stale ? { behaviour_logprobs: r.completions.map((c) => c.logprob) } : {}),
  };
}

/** The adapter shape a request asks for (checked by checkLora), as the models read it. */
export function loraConfigOf(l: LoraSpec): LoraConfig {
  return {
    rank: l.rank,
    alpha: l.alpha,
    targets: LORA_TARGETS.filter((t) => l.targets.includes(t)),
    rslora: l.rslora,
    dropout: 0,
  };
}

/** File inside a checkpoint holding the digest of the request that produced it. */
const REQUEST_DIGEST_FILE = 'request.sha256';

function numericMetrics(metrics: object): Record<string, number> {
  return Object.fromEntries(
    Object.entries(metrics).filter(
      (e): e is [string, number] => typeof e[1] === 'number' && Number.isFinite(e[1]),
    ),
  );
}

export class TrainerCore {
  state: GetStatusResponse = {
    state: TrainerState.TRAINER_STATE_IDLE,
    runId: '',
    round: 0,
    step: 0,
    totalSteps: 0,
    lastCheckpoint: undefined,
  };

  constructor(
    readonly runtime: Runtime,
    /** Where checkpoints are published. */
    readonly store: ArtifactStore,
    readonly metrics?: ServiceMetrics,
    /** Reads the policy and reference, which may live in another store than checkpoints. */
    readonly resolve: ResolveArtifact = resolveFileArtifact,
    /** Told of every round whose checkpoint exists (trained now or before): the wake queue's ack. */
    readonly onTrained: (runId: string, round: number) => Promise<void> = async () => {},
    /**
     * How rounds and sessions train: with gradient checkpointing (TrainRoundOptions.checkpointing),
     * and on a float16 runtime, where their loss scale starts and how it grows (LossScaleSpec).
     */
    readonly training: { checkpointing?: boolean; lossScale?: LossScaleSpec } = {},
  ) {}

  /** onTrained, whose failure is logged, never the call's: the checkpoint is published either way. */
  async trained(runId: string, round: number, log: { warn: (o: object, m: string) => void }): Promise<void> {
    await this.onTrained(runId, round).catch((e: Error) =>
      log.warn({ err: e.message }, 'could not acknowledge the round'),
    );
  }

  get busy(): boolean {
    return this.state.state !== TrainerState.TRAINER_STATE_IDLE;
  }
}

/** A TrainRound request as received: its config and records, and the digest of both as encoded. */
interface ReceivedRound {
  config: TrainRoundConfig;
  records: RoundRecord[];
  digest: string;
  settings: TrainingSettings;
}

/**
 * The staleness bound: a record drawn from a policy older than policy_version − max_staleness
 * trains a policy too far from the one that produced it (docs/algorithms.md "Staleness"); the
 * round is refused before any work, naming both versions. A version newer than the policy trained
 * cannot have been sampled yet, so it says the request is confused.
 */
function refuseStale(config: TrainRoundConfig, versions: number[]): void {
  const oldest = config.policyVersion - config.maxStaleness;
  const i = versions.findIndex((v) => v < oldest || v > config.policyVersion);
  if (i < 0) return;
  throw DuelError.failedPrecondition(
    `records[${i}] was sampled from policy version ${versions[i]}, but this round trains version ${config.policyVersion} with max_staleness ${config.maxStaleness}: records must come from versions ${Math.max(0, oldest)}..${config.policyVersion}`,
  );
}

/** Reads the client stream: the config first, then records; checks every field before any work. */
async function receive(requests: AsyncIterable<TrainRoundRequest>): Promise<ReceivedRound> {
  let config: TrainRoundConfig | undefined;
  const records: RoundRecord[] = [];
  /** Each record's policy_version, in order. */
  const versions: number[] = [];
  const digest = createHash('sha256');
  for await (const req of requests) {
    if (req.kind?.$case === 'config') {
      if (config) throw DuelError.invalidArgument([{ field: 'config', description: 'sent twice' }]);
      config = req.kind.config;
      digest.update(TrainRoundConfig.encode(config).finish());
    } else if (req.kind?.$case === 'record') {
      if (!config)
        throw DuelError.invalidArgument([{ field: 'config', description: 'must be the first message' }]);
      versions.push(req.kind.record.policyVersion);
      const stale = req.kind.record.policyVersion < config.policyVersion;
      records.push(recordOf(req.kind.record, `records[${records.length}]`, stale));
      digest.update(WireRecord.encode(req.kind.record).finish());
    }
  }
  if (!config) throw DuelError.invalidArgument([{ field: 'config', description: 'is required' }]);
  const v = new Violations();
  checkModelRef(v, config.policy, 'config.policy');
  if (config.reference) checkModelRef(v, config.reference, 'config.reference');
  if (config.lora) checkLora(v, config.lora, 'config.lora');
  v.check(
    !config.policy?.adapter || config.lora !== undefined,
    'config.lora',
    'is required when config.policy has an adapter (the round trains that adapter)',
  );
  v.check(config.algorithm.length > 0, 'config.algorithm', 'is required');
  v.check(config.outputUri.length > 0, 'config.output_uri', 'is required (a name inside the artifact store)');
  v.check(records.length > 0, 'records', 'at least one record must follow the config');
  v.throwIfAny();
  refuseStale(config, versions);
  const settings = parseTrainingSettings(
    settingsFromWire(config.optimizer),
    (key) => `config.optimizer.${key}`,
  );
  return { config, records, digest: digest.digest('hex'), settings };
}

const responseOf = (checkpoint: CheckpointRef, metrics: RoundMetrics): TrainRoundResponse => ({
  checkpoint,
  metrics: { values: numericMetrics(metrics) },
  steps: metrics.steps,
  skippedSteps: metrics.skipped_steps,
});

/**
 * The checkpoint this very request already published under its output name, if any; a different
 * request's artifact under that name is FAILED_PRECONDITION (artifacts are immutable).
 */
async function findExisting(
  core: TrainerCore,
  round: ReceivedRound,
): Promise<TrainRoundResponse | undefined> {
  const existing = await core.store.find(round.config.outputUri);
  if (!existing) return undefined;
  const path = join(existing.dir, REQUEST_DIGEST_FILE);
  const made = existsSync(path) ? readFileSync(path, 'utf8').trim() : '';
  if (made !== round.digest)
    throw DuelError.failedPrecondition(
      `artifact '${round.config.outputUri}' already exists from a different request; artifacts are immutable`,
    );
  const metrics = JSON.parse(readFileSync(join(existing.dir, 'metrics.json'), 'utf8')) as RoundMetrics;
  return responseOf(
    { artifact: existing.ref, runId: round.config.runId, round: round.config.round },
    metrics,
  );
}

/**
 * π_ref's weights: a model, or a model with an adapter (a LoRA run's reference update moves it to
 * an earlier round's adapter), merged once here since the reference is frozen.
 */
async function referenceWeights(core: TrainerCore, ref: ModelRef) {
  const m = loadModelDir(await core.resolve(ref.artifact!));
  if (!ref.adapter) return m.weights;
  return mergeAdapter(m.weights, m.config, readAdapterDir(await core.resolve(ref.adapter), m.config));
}

/**
 * The adapter a LoRA round trains: the policy's own, continued (its shape must be the one the
 * round asks for), or a fresh one of that shape, seeded by the round's seed.
 */
/**
 * The loss scale the round that wrote `dir` ended with (its metrics.json), where it trained in
 * float16: the next round starts there, as one GradScaler carries its scale through a whole run,
 * instead of backing off from 2¹⁶ again. A model no round wrote (the run's first) has none.
 */
function endedLossScale(dir: string): number | undefined {
  const file = join(dir, 'metrics.json');
  if (!existsSync(file)) return undefined;
  const scale = (JSON.parse(readFileSync(file, 'utf8')) as RoundMetrics).loss_scale;
  return typeof scale === 'number' && scale > 0 && Number.isFinite(scale) ? scale : undefined;
}

async function adapterToTrain(
  core: TrainerCore,
  config: TrainRoundConfig,
  cfg: LlamaConfig,
): Promise<Adapter> {
  const l = config.lora!;
  const wanted = loraConfigOf(l);
  if (!config.policy!.adapter) return initAdapter(cfg, wanted, Number(config.seed ?? 0));
  const adapter = readAdapterDir(await core.resolve(config.policy!.adapter), cfg);
  const { rank, alpha, targets, rslora } = adapter.config;
  if (
    JSON.stringify({ rank, alpha, targets, rslora }) !==
    JSON.stringify({ rank: l.rank, alpha: l.alpha, targets: wanted.targets, rslora: l.rslora })
  )
    throw DuelError.invalidArgument([
      {
        field: 'config.lora',
        description: `asks for ${JSON.stringify({ rank: l.rank, alpha: l.alpha, targets: l.targets, rslora: l.rslora })} but config.policy.adapter is ${JSON.stringify({ rank, alpha, targets, rslora })}`,
      },
    ]);
  if (adapter.config.dropout > 0)
    throw DuelError.invalidArgument([
      {
        field: 'config.policy.adapter',
        description: `has lora_dropout ${adapter.config.dropout}; duel trains adapters without dropout`,
      },
    ]);
  return adapter;
}

/** Trains the round from its policy checkpoint and publishes the result; a diverged round publishes nothing. */
async function trainAndPublish(
  core: TrainerCore,
  round: ReceivedRound,
  ctx: CallContext,
): Promise<TrainRoundResponse> {
  const { config, records } = round;
  core.state = {
    ...core.state,
    state: TrainerState.TRAINER_STATE_TRAINING,
    runId: config.runId,
    round: config.round,
  };
  const log = ctx.log.child({ run: config.runId, round: config.round });
  log.info({ algo: config.algorithm, records: records.length }, 'round training');
  const policyDir = await core.resolve(config.policy!.artifact!);
  const policy = loadModelDir(policyDir);
  const startScale = endedLossScale(
    config.policy!.adapter ? await core.resolve(config.policy!.adapter) : policyDir,
  );
  const reference = config.reference ? await referenceWeights(core, config.reference) : undefined;
  const adapter = config.lora ? await adapterToTrain(core, config, policy.config) : undefined;
  // The first step's time includes compiling the round's graphs, as a user waiting on it sees it.
  let stepStart = performance.now();
  const { weights, metrics } = await trainRound(core.runtime, {
    algo: config.algorithm,
    hparams: parseSets(Object.entries(config.hyperparameters).map(([k, val]) => `${k}=${val}`)),
    config: policy.config,
    weights: policy.weights,
    ...(reference ? { reference } : {}),
    ...(adapter ? { adapter } : {}),
    lossScale: { ...core.training.lossScale, ...(startScale ? { init: startScale } : {}) },
    checkpointing: core.training.checkpointing ?? false,
    records,
    ...loopSettings(round.settings, Number(config.seed ?? 0)),
    onStep: (step, total, loss) => {
      if (ctx.signal.aborted) throw DuelError.from(ctx.signal.reason ?? new Error('cancelled'));
      // On the TrainRound call's span: the round's steps, with their loss.
      spanEvent('step', { step, total, loss });
      core.state = { ...core.state, step, totalSteps: total };
      core.metrics?.count('duel_trainer_steps_total', 'optimizer steps taken');
      const now = performance.now();
      core.metrics?.latency(
        'duel_trainer_step_seconds',
        'one optimizer step of a round, batch included',
        (now - stepStart) / 1000,
      );
      stepStart = now;
    },
  });
  if (metrics.diverged)
    throw DuelError.failedPrecondition(
      `round ${config.round} diverged (${metrics.skipped_steps} of ${metrics.steps} steps non-finite): no checkpoint published`,
    );
  core.state = { ...core.state, state: TrainerState.TRAINER_STATE_WRITING };
  const scratch = mkdtempSync(join(tmpdir(), 'duel-trainer-'));
  try {
    const local = join(scratch, 'model');
    const save = (extraFiles: Record<string, string>) =>
      adapter
        ? writeAdapterDir(
            local,
            { config: adapter.config, tensors: weights },
            config.policy!.artifact!.uri,
            extraFiles,
          )
        : saveModelDir(local, policy.config, weights, { tokenizerFrom: policy.dir, extraFiles });
    save({
      'metrics.json': `${JSON.stringify(metrics, null, 2)}\n`,
      // What this round trained with, so a scheduled run's rounds can be read back.
      'training.json': `${JSON.stringify(
        {
          run_id: config.runId,
          round: config.round,
          algorithm: config.algorithm,
          hyperparameters: config.hyperparameters,
          reference: config.reference?.artifact ?? null,
          // A LoRA run's reference update: the base with an earlier round's adapter.
          reference_adapter: config.reference?.adapter ?? null,
        },
        null,
        2,
      )}\n`,
      [REQUEST_DIGEST_FILE]: `${round.digest}\n`,
    });
    const checkpoint: CheckpointRef = {
      artifact: await core.store.put(local, config.outputUri),
      runId: config.runId,
      round: config.round,
    };
    core.state = { ...core.state, lastCheckpoint: checkpoint };
    core.metrics?.count('duel_trainer_rounds_total', 'rounds trained and published');
    log.info(
      { uri: checkpoint.artifact!.uri, steps: metrics.steps, loss: metrics.loss_last },
      'round published',
    );
    return responseOf(checkpoint, metrics);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

export function trainerService(core: TrainerCore) {
  return service(TrainerServiceService, {
    async trainRound(requests, ctx): Promise<TrainRoundResponse> {
      if (core.busy)
        throw DuelError.resourceExhausted(`busy training run ${core.state.runId} round ${core.state.round}`);
      core.state = { ...core.state, state: TrainerState.TRAINER_STATE_RECEIVING, step: 0, totalSteps: 0 };
      try {
        const round = await receive(requests);
        const existing = await findExisting(core, round);
        if (existing)
          ctx.log.info(
            { uri: existing.checkpoint!.artifact!.uri },
            'round already trained: returning its checkpoint',
          );
        const response = existing ?? (await trainAndPublish(core, round, ctx));
        await core.trained(round.config.runId, round.config.round, ctx.log);
        return response;
      } finally {
        core.state = { ...core.state, state: TrainerState.TRAINER_STATE_IDLE };
      }
    },

    async getStatus() {
      return core.state;
    },

    // The checkpoint's files in chunks, each file's sha256 with every chunk of it, for clients
    // without access to the store's volume.
    async *exportCheckpoint(req, ctx) {
      if (!req.checkpoint?.artifact)
        throw DuelError.invalidArgument([{ field: 'checkpoint', description: 'is required' }]);
      const chunk = req.chunkSize || 1 << 20;
      if (chunk > 4 << 20)
        throw DuelError.invalidArgument([
          { field: 'chunk_size', description: `must be at most ${4 << 20} bytes` },
        ]);
      const dir = await core.store.get(req.checkpoint.artifact);
      for (const path of listFiles(dir)) {
        const bytes = readFileSync(join(dir, path));
        const sha256 = createHash('sha256').update(bytes).digest('hex');
        for (let offset = 0; offset === 0 || offset < bytes.length; offset += chunk) {
          if (ctx.signal.aborted) return;
          yield {
            path,
            offset,
            data: bytes.subarray(offset, offset + chunk),
            fileSize: bytes.length,
            sha256,
          };
        }
      }
    },
  });
}
