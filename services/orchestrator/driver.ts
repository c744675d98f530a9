/**
 * The orchestrator's core: creates runs and drives their rounds through the stages, with the run
 * record in the KV bucket as its only memory. A round is the table ROUND_STAGES reads top to bottom:
 * each stage does its work, publishes its event (at most once: JetStream drops a repeated message
 * id), then records the stage as reached in the run record, with what a later stage needs (the
 * sampled and scored records as artifacts, the checkpoint). After a crash at any point the next
 * orchestrator resumes each round at the first stage not reached; only the stage that was in flight
 * runs again (its work is seeded, and the trainer returns the checkpoint of a round it already
 * trained), and no event is published twice.
 */
import { randomBytes } from 'node:crypto';
import { hyperparametersAt } from '../../src/algorithms/schedule.js';
import { DuelError } from '../../src/errors.js';
import type { CheckpointRef, Metrics, ModelRef, RoundRecord } from '../../src/gen/duel/v1/common.js';
import { EventKind, type RunEvent } from '../../src/gen/duel/v1/events.js';
import {
  type RoundSummary,
  type Run,
  type RunLease,
  type RunSpec,
  RunState,
} from '../../src/gen/duel/v1/runs.js';
import {
  type ArtifactStore,
  type ResolveArtifact,
  resolveFileArtifact,
} from '../../src/platform/artifacts.js';
import { callUnary } from '../../src/platform/grpc/client.js';
import type { Logger } from '../../src/platform/logger.js';
import type { ServiceMetrics } from '../../src/platform/metrics.js';
import { eventName } from '../../src/platform/run-events.js';
import {
  inSpan,
  type OpenSpan,
  openSpan,
  traceContext,
  withinTraceContext,
} from '../../src/platform/tracing.js';
import type { RunEvents } from './events.js';
import { readPrompts, roundPrompts } from './prompts.js';
import { keepRecords, readRecords } from './round-records.js';
import type { RunStore } from './run-store.js';
import { checkRunId, planRun, type RunPlan } from './spec.js';
import {
  evaluatePolicy,
  type StageContext,
  sampleRound,
  scoreRound,
  trainOnRecords,
  type Workers,
} from './stages.js';

export interface OrchestratorOptions {
  /** This replica's name in run leases (orchestrator.id). */
  id: string;
  /** A run whose lease has not been renewed for this long, on this replica's clock, is taken over. */
  leaseMs: number;
  callDeadlineMs: number;
  trainDeadlineMs: number;
  promptsPerCall: number;
  maxWaitMs: number;
  /** Reads the policy's tokenizer for text prompts, and kept round records; file:// only unless given. */
  resolve?: ResolveArtifact;
  /** Where a round's sampled and scored records are kept (the trainer's checkpoint store). */
  store: ArtifactStore;
}

/** What one round's stages share while it runs; records travel from stage to stage. */
interface RoundRun {
  id: string;
  round: number;
  c: StageContext;
  plan: RunPlan;
  /**
   * The model the round samples from, and its version (the round of its checkpoint): the previous
   * round's checkpoint, or with max_staleness ≥ 1 the newest one published when the round began.
   */
  policy: ModelRef;
  policyVersion: number;
  /**
   * The model the round trains (π_{round-1}): the sampled-from policy when rounds do not overlap;
   * with overlap, set once the previous round has trained.
   */
  base?: ModelRef;
  /** What the round's completion unloads from the samplers: a policy no later round samples from. */
  unload?: ModelRef | undefined;
  prompts: number[][];
  evalPrompts: number[][];
  startedAt: Date;
  /** The round's span when its stages run in different loops (overlapping rounds). */
  span?: OpenSpan;
  sampled?: RoundRecord[];
  scored?: RoundRecord[];
}

/** What a stage's work gives its event and the run record. */
interface StageResult {
  checkpoint?: CheckpointRef | undefined;
  metrics?: Record<string, number>;
  /** The stage's change to the round's summary in the run record. */
  summary?: (s: RoundSummary) => RoundSummary;
  /** Other changes to the run record, in the same write. */
  record?: (r: Run) => Partial<Run>;
  /** When the stage's event says it started; default: when its work began. */
  since?: Date;
}

interface RoundStage {
  event: EventKind;
  work(r: RoundRun, summary: RoundSummary): Promise<StageResult>;
  /**
   * On resuming after this stage: rebuilds what the next stage needs from the run record; false
   * when the record does not hold it (a record written before it did), so this stage runs again.
   */
  restore?(r: RoundRun, summary: RoundSummary): Promise<boolean>;
}

const K = EventKind;
const TERMINAL = [RunState.RUN_STATE_SUCCEEDED, RunState.RUN_STATE_FAILED, RunState.RUN_STATE_CANCELLED];

/** Thrown inside a drive when the record says the run is no longer this driver's to advance. */
class Stopped extends Error {}

/**
 * The policy a checkpoint stands for: the checkpoint itself, or with LoRA the run's base policy
 * with the checkpoint as its adapter (round 0, the start, has none).
 */
export function policyAt(spec: RunSpec, checkpoint: CheckpointRef, name: string): ModelRef {
  return spec.lora && checkpoint.round > 0
    ? { artifact: spec.policy!.artifact, adapter: checkpoint.artifact, name }
    : { artifact: checkpoint.artifact, adapter: undefined, name };
}

/**
 * The reference round `round`'s loss regularises toward: the spec's, or with
 * reference_update_every = N the checkpoint of round N·⌊(round−1)/N⌋ (read from the run record,
 * so a restarted orchestrator picks the same one).
 */
export function lossReference(spec: RunSpec, rounds: RoundSummary[], round: number): ModelRef | undefined {
  const every = spec.referenceUpdateEvery;
  const anchor = every > 0 ? every * Math.floor((round - 1) / every) : 0;
  if (anchor === 0) return spec.reference;
  const checkpoint = rounds.find((r) => r.round === anchor)?.checkpoint;
  if (!checkpoint?.artifact)
    throw DuelError.failedPrecondition(
      `round ${round} regularises toward round ${anchor}, which has no checkpoint`,
    );
  return policyAt(spec, checkpoint, `round-${anchor}`);
}

export class Orchestrator {
  private readonly active = new Map<string, { controller: AbortController; done: Promise<void> }>();
  /** Other replicas' leases as this one last saw them, and since when (its monotonic clock). */
  private readonly observed = new Map<string, { holder: string; renewal: number; since: number }>();
  private scanTimer: NodeJS.Timeout | undefined;
  private stopping = false;

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
   * unchanged (a retried CreateRun or submit message is harmless), with `created` false.
   */
  async create(spec: RunSpec | undefined, requestedId: string): Promise<{ run: Run; created: boolean }> {
    if (requestedId !== '') {
      checkRunId(requestedId);
      // Decided by the record before the spec is looked at: a retry finds its run even when what
      // the spec points at has changed since.
      const existing = await this.store.get(requestedId);
      if (existing) return { run: existing.value, created: false };
    }
    const plan = await planRun(spec);
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
      lease: { holder: this.options.id, renewal: 1, leaseMs: this.options.leaseMs },
      pageUrl: '',
      traceContext: traceContext(),
    };
    if (!(await this.store.create(id, run)))
      return { run: (await this.store.get(id))!.value, created: false };
    await this.events.emit(this.event(run, K.EVENT_KIND_RUN_CREATED, 0, now));
    this.log.info({ run: id, algo: spec!.algorithm, rounds: spec!.rounds }, 'run created');
    this.start(run, plan);
    return { run, created: true };
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

  /**
   * Picks up every unfinished run that no live replica drives: one without a lease, one whose
   * lease names this replica (a restart under the same id), and one whose lease this replica has
   * seen unrenewed for `leaseMs` on its own clock (its driver died). Called at start and then
   * every third of `leaseMs` (`watchLeases`).
   */
  async resumeAll(): Promise<string[]> {
    const resumed: string[] = [];
    const now = performance.now();
    for (const run of await this.list()) {
      // A scan in flight when `stop` began starts nothing more.
      if (this.stopping) break;
      if (TERMINAL.includes(run.state) || this.active.has(run.runId)) {
        this.observed.delete(run.runId);
        continue;
      }
      const lease = run.lease;
      const seen = this.observed.get(run.runId);
      if (!seen || seen.holder !== lease?.holder || seen.renewal !== lease?.renewal)
        this.observed.set(run.runId, {
          holder: lease?.holder ?? '',
          renewal: lease?.renewal ?? 0,
          since: now,
        });
      const stale = now - this.observed.get(run.runId)!.since >= this.options.leaseMs;
      if (lease?.holder && lease.holder !== this.options.id && !stale) continue;
      if (!(await this.claim(run.runId, lease))) continue;
      this.observed.delete(run.runId);
      if (lease?.holder && lease.holder !== this.options.id)
        this.log.warn(
          { run: run.runId, from: lease.holder },
          'took over a run whose driver stopped renewing its lease',
        );
      try {
        this.start(run, await planRun(run.spec));
        resumed.push(run.runId);
      } catch (e) {
        await this.fail(run.runId, run.currentRound, DuelError.from(e));
      }
    }
    if (resumed.length) this.log.info({ runs: resumed }, 'resumed runs');
    return resumed;
  }

  /** Looks for runs to take over every third of the lease until `stop`. */
  watchLeases(): void {
    const every = Math.max(100, Math.floor(this.options.leaseMs / 3));
    const tick = async () => {
      try {
        await this.resumeAll();
      } catch (e) {
        this.log.warn({ err: (e as Error).message }, 'lease scan failed; trying again');
      }
      if (!this.stopping) this.scanTimer = setTimeout(tick, every);
    };
    this.scanTimer = setTimeout(tick, every);
  }

  /**
   * Stops driving, e.g. on SIGTERM, and hands each run's lease back so that another replica takes
   * it over at once; the run's record is otherwise unchanged.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.scanTimer);
    const ids = [...this.active.keys()];
    for (const a of this.active.values()) a.controller.abort(new Stopped('orchestrator stopping'));
    await Promise.all([...this.active.values()].map((a) => a.done));
    await Promise.all(
      ids.map((id) =>
        this.store
          .update(id, (r) =>
            r.lease?.holder === this.options.id
              ? { ...r, lease: { ...r.lease, holder: '', renewal: r.lease.renewal + 1 } }
              : undefined,
          )
          .catch((e) => this.log.warn({ run: id, err: (e as Error).message }, 'could not release the lease')),
      ),
    );
  }

  /**
   * Takes or renews run `id`'s lease by compare-and-set: free, already this replica's, or still
   * the one `expired` (the lease seen unrenewed for `leaseMs`). False when another replica holds
   * it or the run has ended.
   */
  private async claim(id: string, expired?: RunLease): Promise<boolean> {
    const me = this.options.id;
    const run = await this.store.update(id, (r) => {
      if (TERMINAL.includes(r.state)) return undefined;
      const l = r.lease;
      const free =
        !l?.holder || l.holder === me || (l.holder === expired?.holder && l.renewal === expired.renewal);
      if (!free) return undefined;
      return { ...r, lease: { holder: me, renewal: (l?.renewal ?? 0) + 1, leaseMs: this.options.leaseMs } };
    });
    return !TERMINAL.includes(run.state) && run.lease?.holder === me;
  }

  private start(run: Run, plan: RunPlan): void {
    const id = run.runId;
    const controller = new AbortController();
    const renewal = this.renewWhileDriving(id, controller);
    // One span per replica that drives the run, each a child of the call or message that created
    // it (kept in the record): a run resumed after a restart or taken over stays one trace.
    const done = withinTraceContext(run.traceContext, () =>
      inSpan('run', { 'duel.run_id': id }, () => this.drive(id, plan, controller.signal)),
    )
      .catch((e) => {
        if (e instanceof Stopped || controller.signal.aborted) return;
        return this.fail(id, undefined, DuelError.from(e));
      })
      .catch((e) => this.log.error({ run: id, err: (e as Error).message }, 'could not record a run failure'))
      .finally(() => {
        clearInterval(renewal);
        this.active.delete(id);
        this.countDriving();
      });
    this.active.set(id, { controller, done });
    this.countDriving();
  }

  /** What keeps a scaled-to-zero deployment up while it has work (the keda overlay's trigger). */
  private countDriving(): void {
    this.metrics?.gauge('duel_orchestrator_runs_driving', 'runs this replica drives now', this.active.size);
  }

  /**
   * Renews the lease every third of `leaseMs` while the drive runs. The drive is stopped when the
   * lease went to another replica or the run ended (a cancel on another replica), and also when no
   * renewal got through for `leaseMs`: another replica may have taken the run over by then, and
   * two drivers of one run is what the lease exists to prevent.
   */
  private renewWhileDriving(id: string, controller: AbortController): NodeJS.Timeout {
    let renewedAt = performance.now();
    let inFlight = false;
    return setInterval(
      () => {
        if (inFlight || controller.signal.aborted) return;
        inFlight = true;
        this.claim(id)
          .then((held) => {
            if (held) renewedAt = performance.now();
            else controller.abort(new Stopped('the run ended or another replica holds its lease'));
          })
          .catch((e) => {
            if (performance.now() - renewedAt > this.options.leaseMs) {
              this.log.error(
                { run: id, err: (e as Error).message },
                'lease not renewed in time: stopping this drive',
              );
              controller.abort(new Stopped('lease expired'));
            }
          })
          .finally(() => {
            inFlight = false;
          });
      },
      Math.max(50, Math.floor(this.options.leaseMs / 3)),
    );
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
      badRequest: undefined,
      policyVersion: 0,
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
      // The fence: a replica that lost the lease (paused past it, cut off from NATS) writes nothing.
      if (r.lease?.holder !== this.options.id)
        throw new Stopped(`run is driven by ${r.lease?.holder || 'nobody'}`);
      // Rounds may overlap (max_staleness): the record keeps the latest stage of the latest round.
      const later =
        event.round > r.currentRound || (event.round === r.currentRound && event.kind > r.currentStage);
      return {
        ...r,
        ...(later ? { currentRound: event.round, currentStage: event.kind } : {}),
        ...patch(r),
        updatedAt: new Date(),
      };
    });
  }

  /** A round, stage by stage: sampled, scored, trained, evaluated, completed. */
  private readonly stages: readonly RoundStage[] = [
    { event: K.EVENT_KIND_ROUND_STARTED, work: async () => ({ summary: (s) => s }) },
    {
      event: K.EVENT_KIND_ROUND_SAMPLED,
      work: (r) => this.sample(r),
      restore: async (r, s) => {
        if (s.sampled) r.sampled = await readRecords(this.resolve, s.sampled);
        return r.sampled !== undefined;
      },
    },
    {
      event: K.EVENT_KIND_ROUND_SCORED,
      work: (r) => this.score(r),
      restore: async (r, s) => {
        if (s.scored) r.scored = await readRecords(this.resolve, s.scored);
        return r.scored !== undefined;
      },
    },
    {
      event: K.EVENT_KIND_ROUND_TRAINED,
      work: (r) => this.train(r),
      restore: async (_, s) => !!s.checkpoint,
    },
    { event: K.EVENT_KIND_ROUND_EVALUATED, work: (r, s) => this.evaluate(r, s) },
    { event: K.EVENT_KIND_ROUND_COMPLETED, work: (r, s) => this.complete(r, s) },
  ];

  private async drive(id: string, plan: RunPlan, signal: AbortSignal): Promise<void> {
    let run = await this.get(id);
    const spec = run.spec!;
    const policyDir = await this.resolve(spec.policy!.artifact!);
    const prompts = readPrompts(spec.promptsUri, 'spec.prompts_uri', policyDir);
    const evalPrompts = spec.evalPromptsUri
      ? readPrompts(spec.evalPromptsUri, 'spec.eval_prompts_uri', policyDir)
      : prompts;
    const roundRun = (round: number, version: number, from: Run): RoundRun => ({
      id,
      round,
      plan,
      c: {
        runId: id,
        round,
        spec,
        workers: this.workers,
        signal,
        log: this.log.child({ run: id, round }),
        ...this.options,
      },
      policy: policyAt(spec, checkpointOf(from, version), `round-${version}`),
      policyVersion: version,
      prompts: roundPrompts(prompts, spec.promptsPerRound, round),
      evalPrompts,
      startedAt: new Date(),
    });
    if (spec.maxStaleness > 0) return this.driveOverlapped(id, run, roundRun, signal);

    const first =
      run.currentStage === K.EVENT_KIND_ROUND_COMPLETED
        ? run.currentRound + 1
        : Math.max(1, run.currentRound);
    for (let round = first; round <= spec.rounds; round++) {
      const r = roundRun(round, run.latestCheckpoint!.round, run);
      r.base = r.policy;
      r.unload = r.policy;
      // Resume at the first stage not reached, once the stage before it has given back its output
      // from the record; where the record lacks it, that stage runs again.
      let from =
        run.currentRound === round ? this.stages.findIndex((s) => s.event === run.currentStage) + 1 : 0;
      while (from > 0) {
        const previous = this.stages[from - 1]!;
        if (!previous.restore || (await previous.restore(r, summaryOf(run, r)))) break;
        from--;
      }
      if (from > 0) r.c.log.info({ from: eventName(this.stages[from]!.event) }, 'resuming round');
      run = await inSpan('round', { 'duel.run_id': id, 'duel.round': round }, async () => {
        for (const stage of this.stages.slice(from)) run = await this.runStage(r, stage, run, signal);
        return run;
      });
      this.roundDone(r);
    }
    await this.finish(id);
  }

  /**
   * Rounds that overlap (max_staleness N ≥ 1): a producer samples and scores round after round,
   * round t from version t−1−N (π_0 for the first N+1 rounds) as soon as that checkpoint is
   * published; a consumer trains the rounds in order, round t training π_{t−1}, and a finisher
   * evaluates and completes each trained round while the next one trains. With N = 1 that version is the newest checkpoint when round t begins (round t−1 is
   * then still training on the records round t's start waited for), so round t is sampled while
   * round t−1 trains. A fixed version rather than "the newest at that moment" keeps a run
   * reproducible: with N ≥ 2 the newest would depend on how fast training went.
   * Resuming reads each round's progress from its summary in the record (sampled, scored,
   * checkpoint, evaluated, finished), since two rounds may have been in flight.
   */
  private async driveOverlapped(
    id: string,
    start: Run,
    roundRun: (round: number, version: number, from: Run) => RoundRun,
    outer: AbortSignal,
  ): Promise<void> {
    const spec = start.spec!;
    const n = spec.maxStaleness;
    const inner = new AbortController();
    const signal = AbortSignal.any([outer, inner.signal]);
    const progress = new Progress(signal);
    const done = (x: Run, round: number) => !!x.rounds.find((s) => s.round === round)?.finishedAt;
    const trained = (x: Run) =>
      Math.max(0, ...x.rounds.filter((s) => s.checkpoint?.artifact).map((s) => s.round));
    let firstOpen = 1;
    while (firstOpen <= spec.rounds && done(start, firstOpen)) firstOpen++;
    /** Rounds the producer has scored, waiting for training; rounds trained, waiting for evaluation. */
    const ready = new Map<number, RoundRun>();
    const trainedRuns = new Map<number, RoundRun>();
    let newest = trained(start);

    const produce = async () => {
      let run = start;
      for (let round = firstOpen; round <= spec.rounds; round++) {
        const summary = run.rounds.find((s) => s.round === round);
        let r: RoundRun;
        if (summary?.sampled) {
          // Sampled before a restart: from the version the record names.
          r = roundRun(round, summary.policyVersion, run);
        } else {
          const version = Math.max(0, round - 1 - n);
          await progress.until(() => newest >= version);
          run = await this.get(id);
          r = roundRun(round, version, run);
        }
        r.span = openSpan('round', { 'duel.run_id': id, 'duel.round': round });
        const stages = this.stages.slice(0, 3);
        let from = 0;
        if (summary?.scored && (await stages[2]!.restore!(r, summary))) from = 3;
        else if (summary?.sampled && (await stages[1]!.restore!(r, summary))) from = 2;
        for (const stage of stages.slice(from)) run = await this.runStage(r, stage, run, signal);
        ready.set(round, r);
        progress.changed();
      }
    };

    const consume = async () => {
      for (let round = firstOpen; round <= spec.rounds; round++) {
        await progress.until(() => ready.has(round));
        const r = ready.get(round)!;
        ready.delete(round);
        const run = await this.get(id);
        r.base = policyAt(spec, checkpointOf(run, round - 1), `round-${round - 1}`);
        // No later round samples from a version older than round - n.
        r.unload =
          round - 1 - n >= 1
            ? policyAt(spec, checkpointOf(run, round - 1 - n), `round-${round - 1 - n}`)
            : undefined;
        if (!summaryOf(run, r).checkpoint?.artifact) await this.runStage(r, this.stages[3]!, run, signal);
        newest = round;
        trainedRuns.set(round, r);
        progress.changed();
      }
    };

    // Evaluation runs on the samplers and scorers while the next round trains: it waits for its
    // round's checkpoint only, and training never waits for it.
    const finish = async () => {
      for (let round = firstOpen; round <= spec.rounds; round++) {
        await progress.until(() => trainedRuns.has(round));
        const r = trainedRuns.get(round)!;
        trainedRuns.delete(round);
        let run = await this.get(id);
        const evaluated = summaryOf(run, r).metrics?.values.eval_seconds !== undefined;
        for (const stage of this.stages.slice(evaluated ? 5 : 4))
          run = await this.runStage(r, stage, run, signal);
        this.roundDone(r);
        r.span?.end();
      }
    };

    const stopOther = (e: unknown) => {
      inner.abort(e);
      throw e;
    };
    await Promise.all([produce().catch(stopOther), consume().catch(stopOther), finish().catch(stopOther)]);
    await this.finish(id);
  }

  /** Runs one stage of round `r`: its work, its event, then the record (returned as written). */
  private runStage(r: RoundRun, stage: RoundStage, run: Run, signal: AbortSignal): Promise<Run> {
    if (signal.aborted) throw new Stopped('stopped');
    // The stage's span holds its shard calls (CLIENT spans, each with the replica's address) and
    // the publish of its event.
    const traced = () =>
      inSpan(
        `stage ${eventName(stage.event)}`,
        { 'duel.run_id': r.id, 'duel.round': r.round, 'duel.stage': eventName(stage.event) },
        () => this.stageIn(r, stage, run),
      );
    return r.span ? r.span.within(traced) : traced();
  }

  private async stageIn(r: RoundRun, stage: RoundStage, run: Run): Promise<Run> {
    const began = new Date();
    const out = await stage.work(r, summaryOf(run, r));
    const producer = stage.event <= K.EVENT_KIND_ROUND_SCORED;
    return this.reach(
      r.id,
      {
        ...this.event(run, stage.event, r.round, out.since ?? began),
        checkpoint: out.checkpoint,
        metrics: out.metrics ? metricsOf(out.metrics) : undefined,
        policyVersion: producer ? r.policyVersion : r.round,
      },
      (x) => ({
        ...(out.summary
          ? {
              rounds: [
                ...x.rounds.filter((s) => s.round !== r.round),
                out.summary({ ...summaryOf(x, r), policyVersion: r.policyVersion }),
              ].sort((a, b) => a.round - b.round),
            }
          : {}),
        ...out.record?.(x),
      }),
    );
  }

  private roundDone(r: RoundRun): void {
    this.metrics?.count('duel_orchestrator_rounds_total', 'rounds completed');
    this.metrics?.seconds(
      'duel_orchestrator_round_seconds',
      'wall time of a round',
      (Date.now() - r.startedAt.getTime()) / 1000,
    );
  }

  private async sample(r: RoundRun): Promise<StageResult> {
    const t0 = Date.now();
    r.sampled = await sampleRound(r.c, r.policy, r.policyVersion, r.prompts, r.plan.sampling);
    const sampled = await keepRecords(this.options.store, `${this.roundName(r)}.sampled`, r.sampled);
    const count = r.sampled.length * r.plan.sampling.k;
    const tokens = r.sampled.reduce(
      (s, x) => s + x.completions.reduce((a, y) => a + y.tokenIds.length, 0),
      0,
    );
    const seconds = (Date.now() - t0) / 1000;
    const kept = { prompts: r.sampled.length, completions: count, mean_length: tokens / count };
    return {
      metrics: { ...kept, seconds },
      summary: (s) => ({ ...s, sampled, metrics: withValues(s, { ...kept, sample_seconds: seconds }) }),
    };
  }

  private async score(r: RoundRun): Promise<StageResult> {
    const t0 = Date.now();
    r.scored = await scoreRound(r.c, r.sampled!);
    const scored = await keepRecords(this.options.store, `${this.roundName(r)}.scored`, r.scored);
    const k = r.plan.sampling.k;
    const pairs = r.scored.length * k * (k - 1);
    const seconds = (Date.now() - t0) / 1000;
    return {
      metrics: { pairs, seconds },
      summary: (s) => ({ ...s, scored, metrics: withValues(s, { pairs, score_seconds: seconds }) }),
    };
  }

  private async train(r: RoundRun): Promise<StageResult> {
    const t0 = Date.now();
    const run = await this.get(r.id);
    const spec = run.spec!;
    const trained = await trainOnRecords(
      r.c,
      { model: r.base!, version: r.round - 1, maxStaleness: spec.maxStaleness },
      r.scored!,
      this.roundName(r),
      hyperparametersAt(spec.hyperparameters, r.round),
      lossReference(spec, run.rounds, r.round),
    );
    const values: Record<string, number> = {
      ...trained.metrics!.values,
      train_seconds: (Date.now() - t0) / 1000,
    };
    r.c.log.info({ checkpoint: trained.checkpoint!.artifact!.uri, loss: values.loss_last }, 'round trained');
    return {
      checkpoint: trained.checkpoint,
      metrics: values,
      summary: (s) => ({ ...s, checkpoint: trained.checkpoint, metrics: withValues(s, values) }),
    };
  }

  private async evaluate(r: RoundRun, summary: RoundSummary): Promise<StageResult> {
    const t0 = Date.now();
    const next = policyAt(r.c.spec, summary.checkpoint!, `round-${r.round}`);
    const values = await evaluatePolicy(
      r.c,
      r.evalPrompts,
      r.plan.evalSamples,
      next,
      r.c.spec.reference!,
      r.base!,
    );
    values.eval_seconds = (Date.now() - t0) / 1000;
    r.c.log.info(
      { win_rate_vs_ref: values.win_rate_vs_ref, win_rate_vs_prev: values.win_rate_vs_prev },
      'round evaluated',
    );
    return {
      checkpoint: summary.checkpoint,
      metrics: values,
      summary: (s) => ({ ...s, metrics: withValues(s, values) }),
    };
  }

  private async complete(r: RoundRun, summary: RoundSummary): Promise<StageResult> {
    if (r.unload) await this.unloadFromSamplers(r.c, r.unload);
    const finishedAt = new Date();
    return {
      since: r.startedAt,
      checkpoint: summary.checkpoint,
      metrics: {
        ...summary.metrics?.values,
        round_seconds: (finishedAt.getTime() - r.startedAt.getTime()) / 1000,
      },
      summary: (s) => ({ ...s, finishedAt }),
      record: () => ({ latestCheckpoint: summary.checkpoint }),
    };
  }

  /** The round's name in the artifact store: its checkpoint's, and the stem of its records'. */
  private roundName(r: RoundRun): string {
    return `${r.plan.prefix}/${r.id}/round-${r.round}`;
  }

  /** Frees the previous round's policy on the samplers (π_ref stays: mixtures and evaluation use it). */
  private async unloadFromSamplers(c: StageContext, model: ModelRef): Promise<void> {
    if (!model.adapter && model.artifact?.sha256 === c.spec.reference?.artifact?.sha256) return;
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
      TERMINAL.includes(r.state) || (r.lease?.holder && r.lease.holder !== this.options.id)
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

/** Round `r.round`'s summary in `x`, or an empty one. */
function summaryOf(x: Run, r: RoundRun): RoundSummary {
  return (
    x.rounds.find((s) => s.round === r.round) ?? {
      round: r.round,
      checkpoint: undefined,
      metrics: { values: {} },
      startedAt: r.startedAt,
      finishedAt: undefined,
      sampled: undefined,
      scored: undefined,
      policyVersion: r.policyVersion,
    }
  );
}

/** The checkpoint of policy version `version`: round `version`'s, or the run's policy for 0. */
function checkpointOf(run: Run, version: number): CheckpointRef {
  if (version === 0) return { artifact: run.spec!.policy!.artifact, runId: run.runId, round: 0 };
  const c = run.rounds.find((s) => s.round === version)?.checkpoint;
  if (!c?.artifact) throw DuelError.internal(`run ${run.runId} has no checkpoint of round ${version}`);
  return c;
}

/**
 * Two loops of one run waiting on each other's progress: `until` resolves once `ready()` holds,
 * re-checked at every `changed()`, and rejects when the run's drive is aborted.
 */
class Progress {
  private waiters: (() => void)[] = [];

  constructor(private readonly signal: AbortSignal) {
    signal.addEventListener('abort', () => this.changed(), { once: true });
  }

  changed(): void {
    for (const wake of this.waiters.splice(0)) wake();
  }

  async until(ready: () => boolean): Promise<void> {
    while (!ready()) {
      if (this.signal.aborted) throw new Stopped('stopped');
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }
}

/**
 * A round summary's metrics with `values` added: the summary gathers every stage's figures, so
 * the completed event (and the live run page, which reads either) has the whole round.
 */
function withValues(s: RoundSummary, values: Record<string, number>): Metrics {
  return { values: { ...s.metrics?.values, ...values } };
}

function metricsOf(values: Record<string, number>): Metrics {
  return { values };
}
