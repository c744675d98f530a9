/**
 * The orchestrator's core: creates runs and drives their rounds through the stages, with the run
 * record in the KV bucket as its only memory. Before a stage's event is recorded as reached, the
 * event is published (at most once per stage); so after a crash at any point the next
 * orchestrator resumes from the recorded stage, repeats at most the stage that was in flight
 * (sampling and judging are seeded, the trainer returns the checkpoint of a round it already
 * trained), and never publishes a stage's event twice.
 */
import { randomBytes } from 'node:crypto';
import { hyperparametersAt } from '../../src/algorithms/schedule.js';
import { DuelError } from '../../src/errors.js';
import type { Metrics, ModelRef } from '../../src/gen/duel/v1/common.js';
import { EventKind, type RunEvent } from '../../src/gen/duel/v1/events.js';
import { type RoundSummary, type Run, type RunSpec, RunState } from '../../src/gen/duel/v1/runs.js';
import { type ResolveArtifact, resolveFileArtifact } from '../../src/platform/artifacts.js';
import { callUnary } from '../../src/platform/grpc/client.js';
import type { Logger } from '../../src/platform/logger.js';
import type { ServiceMetrics } from '../../src/platform/metrics.js';
import { eventName } from '../../src/platform/run-events.js';
import type { RunEvents } from './events.js';
import { readPrompts, roundPrompts } from './prompts.js';
import type { RunStore } from './run-store.js';
import { checkRunId, planRun, type RunPlan } from './spec.js';
import { evaluatePolicy, type StageContext, sampleAndScore, trainOnRecords, type Workers } from './stages.js';

export interface OrchestratorOptions {
  callDeadlineMs: number;
  trainDeadlineMs: number;
  promptsPerCall: number;
  maxWaitMs: number;
  /** Reads the policy's tokenizer for text prompts; file:// only unless given. */
  resolve?: ResolveArtifact;
}

const K = EventKind;
const TERMINAL = [RunState.RUN_STATE_SUCCEEDED, RunState.RUN_STATE_FAILED, RunState.RUN_STATE_CANCELLED];

/** Thrown inside a drive when the record says the run is no longer this driver's to advance. */
class Stopped extends Error {}

/**
 * The reference round `round`'s loss regularises toward: the spec's, or with
 * reference_update_every = N the checkpoint of round N·⌊(round−1)/N⌋ (read from the run record,
 * so a restarted orchestrator picks the same one).
 */
export function lossReference(spec: RunSpec, rounds: RoundSummary[], round: number): ModelRef | undefined {
  const every = spec.referenceUpdateEvery;
  const anchor = every > 0 ? every * Math.floor((round - 1) / every) : 0;
  if (anchor === 0) return spec.reference;
  const artifact = rounds.find((r) => r.round === anchor)?.checkpoint?.artifact;
  if (!artifact)
    throw DuelError.failedPrecondition(
      `round ${round} regularises toward round ${anchor}, which has no checkpoint`,
    );
  return { artifact, name: `round-${anchor}` };
}

export class Orchestrator {
  private readonly active = new Map<string, { controller: AbortController; done: Promise<void> }>();

  constructor(
    readonly store: RunStore,
    readonly events: RunEvents,
    readonly workers: Workers,
    readonly options: OrchestratorOptions,
    readonly log: Logger,
    readonly metrics?: ServiceMetrics,
  ) {}

  private get resolve(): ResolveArtifact {
    return this.options.resolve ?? resolveFileArtifact;
  }

  /**
   * Validates and records a new run and starts driving it. An existing id returns that run
   * unchanged (a retried CreateRun is harmless).
   */
  async create(spec: RunSpec | undefined, requestedId: string): Promise<Run> {
    if (requestedId !== '') checkRunId(requestedId);
    const plan = planRun(spec);
    const policyDir = await this.resolve(spec!.policy!.artifact!);
    readPrompts(spec!.promptsUri, 'spec.prompts_uri', policyDir);
    if (spec!.evalPromptsUri) readPrompts(spec!.evalPromptsUri, 'spec.eval_prompts_uri', policyDir);
    const id =
      requestedId ||
      `${(spec!.name || 'run')
        .toLowerCase()
        .replace(/[^a-z0-9-]+/g, '-')
        .slice(0, 40)}-${randomBytes(4).toString('hex')}`;
    checkRunId(id);
    const now = new Date();
    const run: Run = {
      runId: id,
      spec: spec!,
      state: RunState.RUN_STATE_RUNNING,
      currentRound: 0,
      currentStage: K.EVENT_KIND_RUN_CREATED,
      rounds: [],
      latestCheckpoint: { artifact: spec!.policy!.artifact, runId: id, round: 0 },
      message: '',
      createdAt: now,
      updatedAt: now,
    };
    if (!(await this.store.create(id, run))) return (await this.store.get(id))!.value;
    await this.events.emit(this.event(run, K.EVENT_KIND_RUN_CREATED, 0, now));
    this.log.info({ run: id, algo: spec!.algorithm, rounds: spec!.rounds }, 'run created');
    this.start(id, plan);
    return run;
  }

  async get(id: string): Promise<Run> {
    checkRunId(id);
    const r = await this.store.get(id);
    if (!r) throw DuelError.notFound(`no run '${id}'`);
    return r.value;
  }

  async list(): Promise<Run[]> {
    const out: Run[] = [];
    for (const k of await this.store.keys()) {
      const r = await this.store.get(k);
      if (r) out.push(r.value);
    }
    return out;
  }

  /** Marks the run cancelled (if it has not ended), publishes `cancelled` and stops its driver. */
  async cancel(id: string, reason: string): Promise<Run> {
    await this.get(id);
    const run = await this.store.update(id, (r) =>
      TERMINAL.includes(r.state)
        ? undefined
        : {
            ...r,
            state: RunState.RUN_STATE_CANCELLED,
            message: reason || 'cancelled',
            updatedAt: new Date(),
          },
    );
    if (run.state === RunState.RUN_STATE_CANCELLED) {
      await this.events.emit({
        ...this.event(run, K.EVENT_KIND_RUN_CANCELLED, 0, new Date()),
        message: run.message,
      });
      this.active.get(id)?.controller.abort(new Stopped('cancelled'));
    }
    return run;
  }

  /** Picks up every run a previous orchestrator left unfinished. */
  async resumeAll(): Promise<string[]> {
    const resumed: string[] = [];
    for (const run of await this.list()) {
      if (TERMINAL.includes(run.state) || this.active.has(run.runId)) continue;
      try {
        this.start(run.runId, planRun(run.spec));
        resumed.push(run.runId);
      } catch (e) {
        await this.fail(run.runId, run.currentRound, DuelError.from(e));
      }
    }
    if (resumed.length) this.log.info({ runs: resumed }, 'resumed runs');
    return resumed;
  }

  /** Stops driving (without changing any record), e.g. on SIGTERM; the next orchestrator resumes. */
  async stop(): Promise<void> {
    for (const a of this.active.values()) a.controller.abort(new Stopped('orchestrator stopping'));
    await Promise.all([...this.active.values()].map((a) => a.done));
  }

  private start(id: string, plan: RunPlan): void {
    const controller = new AbortController();
    const done = this.drive(id, plan, controller.signal)
      .catch((e) => {
        if (e instanceof Stopped || controller.signal.aborted) return;
        return this.fail(id, undefined, DuelError.from(e));
      })
      .catch((e) => this.log.error({ run: id, err: (e as Error).message }, 'could not record a run failure'))
      .finally(() => this.active.delete(id));
    this.active.set(id, { controller, done });
  }

  private event(run: Pick<Run, 'runId'>, kind: EventKind, round: number, startedAt: Date): RunEvent {
    return {
      runId: run.runId,
      kind,
      round,
      time: new Date(),
      stageStartedAt: startedAt,
      checkpoint: undefined,
      metrics: undefined,
      message: '',
    };
  }

  /**
   * Publishes a round stage's event, then records the stage as reached (never moving backwards),
   * applying `patch` to the record in the same compare-and-set.
   */
  private async reach(
    id: string,
    event: RunEvent,
    patch: (r: Run) => Partial<Run> = () => ({}),
  ): Promise<Run> {
    if (await this.events.emit(event)) {
      const started = event.stageStartedAt?.getTime();
      if (event.round > 0 && started !== undefined && event.time)
        this.metrics?.seconds(
          'duel_orchestrator_stage_seconds',
          'time from a stage start to its event, by stage',
          (event.time.getTime() - started) / 1000,
          eventName(event.kind),
        );
    }
    return this.store.update(id, (r) => {
      if (r.state !== RunState.RUN_STATE_RUNNING) throw new Stopped(`run is ${RunState[r.state]}`);
      const later = r.currentRound < event.round || event.kind > r.currentStage;
      return {
        ...r,
        ...(later ? { currentRound: event.round, currentStage: event.kind } : {}),
        ...patch(r),
        updatedAt: new Date(),
      };
    });
  }

  private async drive(id: string, plan: RunPlan, signal: AbortSignal): Promise<void> {
    let run = await this.get(id);
    const spec = run.spec!;
    const policyDir = await this.resolve(spec.policy!.artifact!);
    const prompts = readPrompts(spec.promptsUri, 'spec.prompts_uri', policyDir);
    const evalPrompts = spec.evalPromptsUri
      ? readPrompts(spec.evalPromptsUri, 'spec.eval_prompts_uri', policyDir)
      : prompts;
    const first =
      run.currentStage === K.EVENT_KIND_ROUND_COMPLETED
        ? run.currentRound + 1
        : Math.max(1, run.currentRound);
    for (let round = first; round <= spec.rounds; round++) {
      if (signal.aborted) throw new Stopped('stopped');
      const t0 = Date.now();
      const log = this.log.child({ run: id, round });
      const c: StageContext = {
        runId: id,
        round,
        spec,
        workers: this.workers,
        signal,
        log,
        ...this.options,
      };
      const summaryOf = (r: Run): RoundSummary =>
        r.rounds.find((s) => s.round === round) ?? {
          round,
          checkpoint: undefined,
          metrics: { values: {} },
          startedAt: new Date(t0),
          finishedAt: undefined,
        };
      const withSummary = (r: Run, change: (s: RoundSummary) => RoundSummary): Partial<Run> => ({
        rounds: [...r.rounds.filter((s) => s.round !== round), change(summaryOf(r))].sort(
          (a, b) => a.round - b.round,
        ),
      });
      const policy: ModelRef = { artifact: run.latestCheckpoint!.artifact, name: `round-${round - 1}` };
      const reached = run.currentRound === round ? run.currentStage : K.EVENT_KIND_UNSPECIFIED;
      let summary = summaryOf(run);

      if (reached < K.EVENT_KIND_ROUND_TRAINED || !summary.checkpoint) {
        run = await this.reach(id, this.event(run, K.EVENT_KIND_ROUND_STARTED, round, new Date(t0)), (r) =>
          withSummary(r, (s) => s),
        );
        const stageStart = new Date();
        const batch = roundPrompts(prompts, spec.promptsPerRound, round);
        let sampledAt = new Date();
        const records = await sampleAndScore(c, policy, batch, plan.sampling, async (recs) => {
          const tokens = recs.reduce(
            (s, r) => s + r.completions.reduce((a, x) => a + x.tokenIds.length, 0),
            0,
          );
          const count = recs.length * plan.sampling.k;
          run = await this.reach(id, {
            ...this.event(run, K.EVENT_KIND_ROUND_SAMPLED, round, stageStart),
            metrics: metricsOf({
              prompts: recs.length,
              completions: count,
              mean_length: tokens / count,
              seconds: (Date.now() - stageStart.getTime()) / 1000,
            }),
          });
          sampledAt = new Date();
        });
        run = await this.reach(id, {
          ...this.event(run, K.EVENT_KIND_ROUND_SCORED, round, sampledAt),
          metrics: metricsOf({
            pairs: records.length * plan.sampling.k * (plan.sampling.k - 1),
            seconds: (Date.now() - sampledAt.getTime()) / 1000,
          }),
        });
        const trainStart = new Date();
        const trained = await trainOnRecords(
          c,
          policy,
          records,
          `${plan.prefix}/${id}/round-${round}`,
          hyperparametersAt(spec.hyperparameters, round),
          lossReference(spec, run.rounds, round),
        );
        const values: Record<string, number> = {
          ...trained.metrics!.values,
          train_seconds: (Date.now() - trainStart.getTime()) / 1000,
        };
        run = await this.reach(
          id,
          {
            ...this.event(run, K.EVENT_KIND_ROUND_TRAINED, round, trainStart),
            checkpoint: trained.checkpoint,
            metrics: { values },
          },
          (r) => withSummary(r, (s) => ({ ...s, checkpoint: trained.checkpoint, metrics: { values } })),
        );
        summary = summaryOf(run);
        log.info({ checkpoint: trained.checkpoint!.artifact!.uri, loss: values.loss_last }, 'round trained');
      }

      const next: ModelRef = { artifact: summary.checkpoint!.artifact, name: `round-${round}` };
      if (reached < K.EVENT_KIND_ROUND_EVALUATED) {
        const evalStart = new Date();
        const values = await evaluatePolicy(c, evalPrompts, plan.evalSamples, next, spec.reference!, policy);
        values.eval_seconds = (Date.now() - evalStart.getTime()) / 1000;
        run = await this.reach(
          id,
          {
            ...this.event(run, K.EVENT_KIND_ROUND_EVALUATED, round, evalStart),
            checkpoint: summary.checkpoint,
            metrics: metricsOf(values),
          },
          (r) => withSummary(r, (s) => ({ ...s, metrics: { values: { ...s.metrics?.values, ...values } } })),
        );
        log.info(
          { win_rate_vs_ref: values.win_rate_vs_ref, win_rate_vs_prev: values.win_rate_vs_prev },
          'round evaluated',
        );
      }

      await this.unloadFromSamplers(c, policy);
      const finishedAt = new Date();
      run = await this.reach(
        id,
        {
          ...this.event(run, K.EVENT_KIND_ROUND_COMPLETED, round, new Date(t0)),
          checkpoint: summary.checkpoint,
          metrics: {
            values: { ...summaryOf(run).metrics?.values, round_seconds: (finishedAt.getTime() - t0) / 1000 },
          },
        },
        (r) => ({
          ...withSummary(r, (s) => ({ ...s, finishedAt })),
          latestCheckpoint: summary.checkpoint,
        }),
      );
      this.metrics?.count('duel_orchestrator_rounds_total', 'rounds completed');
      this.metrics?.seconds(
        'duel_orchestrator_round_seconds',
        'wall time of a round',
        (finishedAt.getTime() - t0) / 1000,
      );
    }
    await this.finish(id);
  }

  /** Frees the previous round's policy on the samplers (π_ref stays: mixtures and evaluation use it). */
  private async unloadFromSamplers(c: StageContext, model: ModelRef): Promise<void> {
    if (model.artifact?.sha256 === c.spec.reference?.artifact?.sha256) return;
    await Promise.all(
      (await c.workers.samplers.replicas()).map((r) =>
        callUnary(
          r.client,
          r.client.unloadModel,
          { model },
          { deadlineMs: 10_000 },
          'sampler UnloadModel',
        ).catch((e) =>
          c.log.debug({ replica: r.address, err: (e as Error).message }, 'unload failed (ignored)'),
        ),
      ),
    );
  }

  private async finish(id: string): Promise<void> {
    const run = await this.store.update(id, (r) =>
      r.state === RunState.RUN_STATE_RUNNING
        ? { ...r, state: RunState.RUN_STATE_SUCCEEDED, updatedAt: new Date() }
        : undefined,
    );
    if (run.state !== RunState.RUN_STATE_SUCCEEDED) return;
    await this.events.emit({
      ...this.event(run, K.EVENT_KIND_RUN_FINISHED, 0, run.createdAt ?? new Date()),
      checkpoint: run.latestCheckpoint,
    });
    this.log.info({ run: id, rounds: run.rounds.length }, 'run finished');
  }

  /** Records the failure, then publishes the round's `failed` (when in a round) and the run's. */
  private async fail(id: string, round: number | undefined, error: DuelError): Promise<void> {
    const message = error.message;
    const run = await this.store.update(id, (r) =>
      TERMINAL.includes(r.state)
        ? undefined
        : { ...r, state: RunState.RUN_STATE_FAILED, message, updatedAt: new Date() },
    );
    if (run.state !== RunState.RUN_STATE_FAILED) return;
    const at = round ?? run.currentRound;
    if (at > 0 && run.currentStage !== K.EVENT_KIND_ROUND_COMPLETED)
      await this.events.emit({ ...this.event(run, K.EVENT_KIND_ROUND_FAILED, at, new Date()), message });
    await this.events.emit({ ...this.event(run, K.EVENT_KIND_RUN_FAILED, 0, new Date()), message });
    this.log.error({ run: id, round: at, err: message }, 'run failed');
  }
}

function metricsOf(values: Record<string, number>): Metrics {
  return { values };
}
