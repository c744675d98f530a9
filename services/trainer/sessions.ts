/**
 * The trainer's training sessions: their lifecycle, what makes calls safe to retry, and what makes
 * sessions outlive the trainer. Each mutating call is applied, then journaled (the call under
 * `<session>.<seq>`, then the session's record by compare-and-set: the commit point) before its
 * answer goes back. A session not in memory (a restarted trainer, another replica) is restored on
 * first use: its start (the base, or a LoadState artifact) or its last snapshot, then the journaled
 * calls after it, replayed in order, which gives the same state bit for bit on the same provider.
 *
 * Snapshots: every `snapshotEvery` optimizer steps the state is pinned in its worker (no copy: a
 * step replaces a state's tensors, it does not write into them) and written into the artifact
 * store while the next calls run (`snapshotLater`); once the record names it, the calls it covers
 * are dropped. A call too big for the journal is covered by a snapshot written before its answer.
 *
 * What each call costs the journal: one KV write of the call (the request's token ids and values)
 * and one of the record; every `snapshotEvery` optimizer steps, the state's bytes (4 × parameters
 * × (1 + optimizer slots + 1 accumulator)) into the store. A trainer that dies between applying a
 * call and committing it loses only that call, which the client's retry then applies.
 *
 * With several trainer replicas (a durable journal comes with their leases, ./trainer-leases.ts)
 * every session has an owner in its record: the replica that holds it in memory. `route` says where
 * a session's call is served: here, or at the owner's address (the gRPC layer forwards it); a
 * session whose owner's lease is dead is taken over by compare-and-set on its record and restored
 * here. The commit's compare-and-set is the fence: a replica that lost a session to another commits
 * nothing more of it.
 */
import { createHash, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseSets } from '../../src/algorithms/recipes/index.js';
import { TOKEN_LOSSES, type TokenLoss, TrainingSession } from '../../src/algorithms/session.js';
import {
  loopSettings,
  parseTrainingSettings,
  settingsFromWire,
} from '../../src/algorithms/training-settings.js';
import { freeHostTensors, type PinnedSnapshot, SharedTensors } from '../../src/engine/index.js';
import { DuelError } from '../../src/errors.js';
import type { ArtifactRef, LoraSpec, ModelRef, OptimizerConfig } from '../../src/gen/duel/v1/common.js';
import {
  type ForwardBackwardRequest,
  type ForwardBackwardResponse,
  type OptimStepRequest,
  type OptimStepResponse,
  SessionCall,
  type TrainingDatum,
  type TrainingSessionInfo,
  TrainingSessionRecord,
} from '../../src/gen/duel/v1/training.js';
import type { LlamaConfig } from '../../src/models/llama/config.js';
import { type Decoder, DecoderRunner } from '../../src/models/llama/runner.js';
import { initAdapter, writeAdapterDir } from '../../src/models/lora/adapter.js';
import { loadModelDir, saveModelDir } from '../../src/models/model-dir.js';
import { type ArtifactManifest, FileArtifactStore } from '../../src/platform/artifacts.js';
import type { Logger } from '../../src/platform/logger.js';
import { loraConfigOf, recordOf, type TrainerCore } from './service.js';
import { callKey, memoryJournal, type SessionJournal } from './session-journal.js';
import { readSessionState, writeSessionState, writeSessionStateAsync } from './session-state.js';

type Request = NonNullable<SessionCall['request']>;
type Answer = NonNullable<SessionCall['answer']>;
type CallKind = Request['$case'];
/** The answer each kind of call gets. */
type AnswerOf<K extends CallKind> = Extract<Answer, { $case: `${K}Answer` }>;

/** A base model that LoRA sessions share: its weights held once, in one worker. */
interface SharedBase {
  key: string;
  config: LlamaConfig;
  dir: string;
  tensors: SharedTensors;
  users: number;
  /** Decoders of the base taking adapters as inputs, one per target set, built on first Sample. */
  decoders: Map<string, Promise<DecoderRunner>>;
}

interface Live {
  /** As last committed. */
  record: TrainingSessionRecord;
  /** The base model's config and directory (its tokenizer goes with saved weights). */
  model: { config: LlamaConfig; dir: string };
  session: TrainingSession;
  /** A LoRA session's shared base. */
  base?: SharedBase;
  /** A full-weight session's decoder, reading the training state's weights in place. */
  decoder?: Promise<DecoderRunner>;
  /** The weights' version a LoRA session's adapter was last set into its base's decoder at. */
  adapterVersion?: number;
  /** The optimizer step the last snapshot taken (or the start) holds. */
  snapshotStep: number;
  /** A snapshot being written off the call path (at most one per session). */
  snapshotting?: Promise<void>;
  /** Wakes that snapshot's read: an optimizer step has replaced the pinned tensors. */
  stepped?: () => void;
  /** Puts that read off while calls come (the idle wait starts again). */
  called?: () => void;
  /** One call at a time per session, in seq order. */
  queue: Promise<unknown>;
}

export interface SessionsOptions {
  /** Opens the journal on first use (default: this process's memory). */
  journal?: () => Promise<SessionJournal>;
  /** Snapshot a session's state every this many optimizer steps (default 10). */
  snapshotEvery?: number;
  /**
   * Write those snapshots while the session's next calls run (default true); false writes each
   * before the answer of the step that takes it, as duel did before (the benchmark's peer).
   */
  snapshotInBackground?: boolean;
  /** Sessions give activation memory back after each run (default true: many sessions per trainer). */
  lowMemory?: boolean;
  log?: Logger;
}

const ids = (xs: readonly number[]) => [...xs];

/**
 * Where a session's calls are served: in this replica, or forwarded to its owner, for as long as
 * `alive` (the owner's lease, as this replica watches it) says the owner lives.
 */
export type Route =
  | { local: true }
  | { local: false; owner: string; address: string; alive: () => boolean; checkEveryMs: number };
const HERE: Route = { local: true };

export const datumsFromWire = (data: readonly TrainingDatum[]) =>
  data.map((d) => ({
    promptIds: ids(d.promptIds),
    completionIds: ids(d.completionIds),
    ...(d.tokenWeights.length ? { tokenWeights: [...d.tokenWeights] } : {}),
    ...(d.advantages.length ? { advantages: [...d.advantages] } : {}),
    ...(d.samplingLogprobs.length ? { samplingLogprobs: [...d.samplingLogprobs] } : {}),
  }));

export const isTokenLoss = (loss: string): loss is TokenLoss =>
  (TOKEN_LOSSES as readonly string[]).includes(loss);

/** The state-changing calls, the same live and in a replay. */
async function forwardBackward(l: Live, req: ForwardBackwardRequest): Promise<ForwardBackwardResponse> {
  if (!isTokenLoss(req.loss)) {
    const records = req.data.map((d, i) => recordOf(d.roundRecord!, `data[${i}].round_record`));
    const loss = await l.session.forwardBackwardRecords(
      req.loss,
      parseSets(Object.entries(req.lossConfig).map(([k, v]) => `${k}=${v}`)),
      records,
      l.record.seed + req.seq,
    );
    const completions = records.reduce((n, r) => n + r.completion_ids.length, 0);
    return { loss, metrics: { values: { records: records.length, completions } } };
  }
  const data = datumsFromWire(req.data);
  const clip = req.lossConfig.clip === undefined ? undefined : Number(req.lossConfig.clip);
  const loss = await l.session.forwardBackward(req.loss, data, clip === undefined ? {} : { clip });
  const tokens = data.reduce((n, d) => n + d.completionIds.length, 0);
  return { loss, metrics: { values: { completion_tokens: tokens, sequences: data.length } } };
}

async function optimStep(l: Live, req: OptimStepRequest): Promise<OptimStepResponse> {
  const m = await l.session.optimStep(req.learningRate);
  return {
    step: l.session.steps,
    metrics: {
      values: {
        loss: m.loss,
        grad_norm: m.gradNorm,
        lr: m.lr,
        applied: m.applied ? 1 : 0,
        // float16: the scale this step's gradient was computed under (an overflow is not applied).
        ...(m.lossScale !== undefined ? { loss_scale: m.lossScale } : {}),
      },
    },
  };
}

/** What a record keeps of the last call: its kind and answer (the request's data is in the call entry). */
function lastOf(call: SessionCall): SessionCall {
  const r = call.request!;
  const request: Request =
    r.$case === 'forwardBackward'
      ? { $case: r.$case, forwardBackward: { ...r.forwardBackward, data: [] } }
      : r;
  return { ...call, request };
}

export class TrainingSessions {
  private readonly live = new Map<string, Promise<Live>>();
  private readonly tokens = new Map<string, Promise<string>>();
  private readonly bases = new Map<string, Promise<SharedBase>>();
  /** The lease epoch (TrainerLeases.epoch) in which each held session's ownership was last verified. */
  private readonly verified = new Map<string, number>();
  /**
   * The last seq of each session this process saw committed to the journal. A read of the record
   * that is older comes from a NATS server that has not applied it yet (a stream leader just
   * elected) and is read again, rather than taken for another trainer's write or restored from.
   */
  private readonly committed = new Map<string, number>();
  private opened?: Promise<SessionJournal>;
  private readonly snapshotEvery: number;

  constructor(
    readonly core: TrainerCore,
    private readonly options: SessionsOptions = {},
  ) {
    this.snapshotEvery = options.snapshotEvery ?? 10;
  }

  /** What this trainer holds in memory: live sessions, and base models shared by LoRA sessions. */
  get loaded(): { sessions: number; sharedBases: number } {
    return { sessions: this.live.size, sharedBases: this.bases.size };
  }

  /** The journal, opened once; its client tokens indexed. */
  private journal(): Promise<SessionJournal> {
    if (!this.opened) {
      const opened = (async () => {
        const j = await (this.options.journal ?? (async () => memoryJournal()))();
        for (const id of await j.records.keys()) {
          const r = (await j.records.get(id))?.value;
          if (r?.clientToken) this.tokens.set(r.clientToken, Promise.resolve(id));
        }
        return j;
      })();
      opened.catch(() => {
        if (this.opened === opened) this.opened = undefined;
      });
      this.opened = opened;
    }
    return this.opened;
  }

  /**
   * A new session on `base` (or resumed from a SaveState artifact); the same non-empty client
   * token returns the session it made before, even across trainer restarts.
   */
  async create(
    from: (
      | { base: ModelRef; optimizer: OptimizerConfig | undefined; seed: number; lora: LoraSpec | undefined }
      | { state: ArtifactRef }
    ) & { checkpointing?: boolean | undefined },
    clientToken: string,
  ): Promise<string> {
    const j = await this.journal();
    const existing = clientToken ? this.tokens.get(clientToken) : undefined;
    if (existing) return existing;
    // A token names its session's id: a retry that reaches another replica finds the record, and
    // two replicas creating at once race on one key, which only one creates.
    const id = clientToken ? sessionIdOfToken(clientToken) : randomUUID();
    const made = (async () => {
      if (clientToken && (await j.records.get(id))) return id;
      const start =
        'state' in from
          ? { ...readSessionState(await this.core.resolve(from.state)), loadedFrom: from.state }
          : { ...from, loadedFrom: undefined };
      const leases = j.leases;
      const record = TrainingSessionRecord.fromPartial({
        sessionId: id,
        owner: leases ? { holder: leases.id, address: leases.address } : undefined,
        base: start.base,
        optimizer: start.optimizer,
        clientToken,
        seed: start.seed,
        lora: start.lora,
        loadedFrom: start.loadedFrom,
        gradientCheckpointing: from.checkpointing ?? this.core.training.checkpointing ?? false,
      });
      const live = this.open(record);
      this.live.set(id, live);
      if (leases) this.verified.set(id, leases.epoch);
      try {
        const l = await live;
        record.step = l.session.steps;
        if (!(await j.records.create(id, record))) {
          // Another replica made it first: it serves the session.
          this.live.delete(id);
          await this.closeLive(l);
        }
      } catch (e) {
        this.live.delete(id);
        await live.then((l) => this.closeLive(l)).catch(() => {});
        throw e;
      }
      return id;
    })();
    if (clientToken) {
      this.tokens.set(clientToken, made);
      made.catch(() => this.tokens.delete(clientToken));
    }
    return made;
  }

  /** Loads the session's start or last snapshot (the calls after it are the caller's to replay). */
  private async open(r: TrainingSessionRecord): Promise<Live> {
    const settings = parseTrainingSettings(settingsFromWire(r.optimizer), (key) => `optimizer.${key}`);
    const { optimizer, gradClip, lr } = loopSettings(settings, 0);
    const loop = {
      optimizer,
      gradClip,
      lr,
      lowMemory: this.options.lowMemory ?? true,
      checkpointing: r.gradientCheckpointing ?? this.core.training.checkpointing ?? false,
      // A float16 runtime trains sessions in mixed precision, as it trains rounds.
      dtype: this.core.runtime.dtype,
      lossScale: this.core.training.lossScale ?? {},
    };
    let l: Live;
    if (r.lora) {
      const lora = loraConfigOf(r.lora);
      const base = await this.acquireBase(r.base!.artifact!);
      try {
        const session = await TrainingSession.create(this.core.runtime, {
          config: base.config,
          weights: initAdapter(base.config, lora, r.seed).tensors,
          handOver: true,
          lora: { config: lora, base: base.tensors },
          ...loop,
        });
        l = { record: r, model: base, session, base, snapshotStep: 0, queue: Promise.resolve() };
      } catch (e) {
        await this.releaseBase(base);
        throw e;
      }
    } else {
      const { config, dir, weights } = loadModelDir(await this.core.resolve(r.base!.artifact!));
      const session = await TrainingSession.create(this.core.runtime, {
        config,
        // Moved into the worker, not copied: π_ref is read from the base's files if a loss asks
        // for it, so this process keeps no host copy of the weights.
        weights,
        handOver: true,
        reference: async () => loadModelDir(await this.core.resolve(r.base!.artifact!)).weights,
        ...loop,
      });
      l = { record: r, model: { config, dir }, session, snapshotStep: 0, queue: Promise.resolve() };
    }
    const from = r.snapshot ?? r.loadedFrom;
    try {
      // Read only to be restored: its buffers move into the worker.
      if (from)
        await l.session.restore(readSessionState(await this.core.resolve(from)).snapshot, { handOver: true });
    } catch (e) {
      await this.closeLive(l);
      throw e;
    }
    l.snapshotStep = l.session.steps;
    return l;
  }

  /** The shared base of LoRA sessions on `ref`, loaded by the first of them. */
  private async acquireBase(ref: ArtifactRef): Promise<SharedBase> {
    const key = `${ref.uri}#${ref.sha256}`;
    let loading = this.bases.get(key);
    if (!loading) {
      loading = (async () => {
        const m = loadModelDir(await this.core.resolve(ref));
        // Loaded only to be held there: moved into the worker, not copied.
        const tensors = await SharedTensors.create(this.core.runtime, m.weights, { handOver: true });
        return { key, config: m.config, dir: m.dir, tensors, users: 0, decoders: new Map() };
      })();
      this.bases.set(key, loading);
      loading.catch(() => this.bases.delete(key));
    }
    const base = await loading;
    base.users++;
    return base;
  }

  private async releaseBase(base: SharedBase): Promise<void> {
    if (--base.users > 0) return;
    this.bases.delete(base.key);
    await base.tensors.dispose();
    for (const d of base.decoders.values()) await (await d).release();
  }

  /** Frees a live session's memory (its journal stays). */
  private async closeLive(l: Live): Promise<void> {
    await l.session.close();
    if (l.decoder) await (await l.decoder).release();
    if (l.base) {
      const d = l.base.decoders.get(l.session.lora!.targets.join());
      if (d && l.adapterVersion !== undefined) await (await d).dropAdapter(l.record.sessionId);
      await this.releaseBase(l.base);
    }
  }

  /**
   * A decoder of the session's current weights. Full weights: one that reads them from the
   * training state in place (nothing copied or compiled after a step). LoRA: the base's decoder
   * shared by every session with the same targets, this session's adapter set into it under the
   * session's id when it changed.
   */
  async decoder(l: Live): Promise<Decoder> {
    const version = l.session.version;
    if (!l.base) {
      // Reads the training state's weights in place: built once, right after every step.
      if (!l.decoder) {
        const d = DecoderRunner.fromState(
          this.core.runtime,
          l.model.config,
          l.session.parameterSource,
          undefined,
          { dtype: l.session.dtype },
        );
        d.catch(() => {
          if (l.decoder === d) l.decoder = undefined;
        });
        l.decoder = d;
      }
      return l.decoder;
    }
    const lora = l.session.lora!;
    const key = lora.targets.join();
    let d = l.base.decoders.get(key);
    if (!d) {
      // Reads the base the sessions train on where it lives: the trainer holds it once.
      d = DecoderRunner.fromState(this.core.runtime, l.base.config, l.base.tensors.source, lora.targets, {
        dtype: l.session.dtype,
      });
      l.base.decoders.set(key, d);
      d.catch(() => l.base?.decoders.delete(key));
    }
    const runner = await d;
    if (l.adapterVersion !== version) {
      await runner.setAdapter(l.record.sessionId, { config: lora, tensors: await l.session.weights() });
      l.adapterVersion = version;
    }
    return runner.withAdapter(l.record.sessionId);
  }

  /**
   * Where session `id`'s calls are served. Here when it is held here or owned here; at its owner
   * while the owner's lease lives; otherwise (no owner yet, or the owner stopped renewing) this
   * replica takes it over, by compare-and-set on the record, and restores it on the call.
   */
  async route(id: string): Promise<Route> {
    const j = await this.journal();
    const leases = j.leases;
    // A session held here is owned here while this replica's lease holds without a lapse since it
    // was last verified; after one, its record says whether another replica took it meanwhile.
    if (!leases || (this.live.has(id) && leases.fresh && this.verified.get(id) === leases.epoch)) return HERE;
    for (let attempt = 1; ; attempt++) {
      const epoch = leases.epoch;
      const r = (await j.records.get(id))?.value;
      if (!r) throw DuelError.notFound(`no training session '${id}'`);
      const owner = r.owner?.holder ?? '';
      if (owner === leases.id) {
        this.verified.set(id, epoch);
        return HERE;
      }
      // Taken over while this replica was away: what it holds of the session is stale.
      if (this.live.has(id)) await this.drop(id);
      if (owner && (await leases.aliveNow(owner)))
        return {
          local: false,
          owner,
          address: r.owner!.address,
          alive: () => leases.alive(owner),
          checkEveryMs: Math.max(50, Math.floor(leases.options.leaseMs / 3)),
        };
      const taken = await j.records.update(id, (cur) =>
        (cur.owner?.holder ?? '') === owner
          ? { ...cur, owner: { holder: leases.id, address: leases.address } }
          : undefined,
      );
      if (taken.owner?.holder === leases.id) {
        this.verified.set(id, epoch);
        if (owner)
          this.options.log?.warn(
            { session: id, from: owner },
            'took over a training session whose trainer stopped renewing its lease',
          );
        return HERE;
      }
      // Another replica took it first: serve it there.
      if (attempt === 3)
        throw DuelError.unavailable(`session '${id}' is changing owner (to ${taken.owner?.holder}): retry`);
    }
  }

  /** Whether a read of session `id`'s record holds every call this process saw committed. */
  private caughtUp(id: string): (r: TrainingSessionRecord) => boolean {
    const seq = this.committed.get(id) ?? 0;
    return (r) => r.seq >= seq;
  }

  /** A session's journal record and its calls since the last snapshot, replayed. */
  private async restore(id: string): Promise<Live> {
    const t0 = performance.now();
    const j = await this.journal();
    const r = (await j.records.get(id, this.caughtUp(id)))?.value;
    if (!r) throw DuelError.notFound(`no training session '${id}'`);
    const l = await this.open(r);
    try {
      for (let seq = r.snapshotSeq + 1; seq <= r.seq; seq++) {
        const call = (await j.calls.get(callKey(id, seq)))?.value;
        if (!call) throw DuelError.internal(`the journal of session '${id}' has no call ${seq} to replay`);
        const req = call.request!;
        if (req.$case === 'forwardBackward') {
          const { loss } = await forwardBackward(l, req.forwardBackward);
          const journaled =
            call.answer?.$case === 'forwardBackwardAnswer' ? call.answer.forwardBackwardAnswer.loss : loss;
          if (loss !== journaled)
            this.options.log?.warn({ session: id, seq, loss, journaled }, 'replay gave another loss');
        } else if (req.$case === 'optimStep') await optimStep(l, req.optimStep);
      }
    } catch (e) {
      await this.closeLive(l);
      throw e;
    }
    this.options.log?.info(
      { session: id, seq: r.seq, replayed: r.seq - r.snapshotSeq, ms: Math.round(performance.now() - t0) },
      'training session restored',
    );
    return l;
  }

  private entry(id: string): Promise<Live> {
    let l = this.live.get(id);
    if (!l) {
      l = this.restore(id);
      this.live.set(id, l);
      l.catch(() => this.live.delete(id));
    }
    return l;
  }

  async info(id: string): Promise<TrainingSessionInfo> {
    // A live session's record is the freshest (one restoring is awaited); after a failed restore, the journal's.
    const l = await this.live.get(id)?.catch(() => undefined);
    const r = l?.record ?? (await (await this.journal()).records.get(id))?.value;
    if (!r) throw DuelError.notFound(`no training session '${id}'`);
    return {
      sessionId: r.sessionId,
      base: r.base,
      seq: r.seq,
      step: r.step,
      owner: r.owner?.holder ?? '',
      // What the live session trains with; else what it will when restored.
      gradientCheckpointing:
        l?.session.checkpointing ?? r.gradientCheckpointing ?? this.core.training.checkpointing ?? false,
    };
  }

  async list(): Promise<TrainingSessionInfo[]> {
    const j = await this.journal();
    return Promise.all((await j.records.keys()).map((id) => this.info(id)));
  }

  /** Runs `fn` on the session in its call order, without a seq (reads that apply nothing). */
  async read<A>(id: string, fn: (l: Live) => Promise<A>): Promise<A> {
    const l = await this.entry(id);
    l.called?.();
    const run = l.queue.then(() => fn(l));
    l.queue = run.catch(() => {}).finally(() => l.called?.());
    return run;
  }

  /**
   * Runs a mutating call once: seq = last + 1 applies and journals it; seq = last answers what it
   * answered (the same kind of call only); anything else is refused naming the expected seq.
   */
  async mutate<K extends CallKind>(
    id: string,
    seq: number,
    request: Extract<Request, { $case: K }>,
    apply: (l: Live) => Promise<AnswerOf<K>>,
  ): Promise<AnswerOf<K>> {
    const l = await this.entry(id);
    l.called?.();
    const run = l.queue.then(async () => {
      const r = l.record;
      if (seq === r.seq && r.last) {
        if (r.last.request?.$case !== request.$case)
          throw DuelError.failedPrecondition(
            `seq ${seq} was a ${rpcName(r.last.request?.$case)} call; a retry must repeat it (the next new call is seq ${r.seq + 1})`,
          );
        return r.last.answer as AnswerOf<K>;
      }
      if (seq !== r.seq + 1)
        throw DuelError.failedPrecondition(`session '${id}' expects seq ${r.seq + 1}, got ${seq}`);
      const answer = await apply(l);
      try {
        await this.commit(l, { seq, request, answer });
      } catch (e) {
        // The state holds a call the journal does not: drop it, so the next call restores from the
        // journal and a retry applies the call once.
        this.live.delete(id);
        await this.closeLive(l).catch(() => {});
        throw e;
      }
      return answer;
    });
    l.queue = run.catch(() => {}).finally(() => l.called?.());
    return run;
  }

  private async commit(l: Live, call: SessionCall): Promise<void> {
    const j = await this.journal();
    const id = l.record.sessionId;
    const fits = SessionCall.encode(call).finish().byteLength <= j.maxCallBytes;
    const steps = l.session.steps;
    const stepped = call.request?.$case === 'optimStep';
    if (fits) await j.calls.put(callKey(id, call.seq), call);
    // A call too big for the journal is covered by a snapshot before its answer; the periodic ones
    // are pinned here and written off the call path (snapshotLater).
    const due = stepped && steps - l.snapshotStep >= this.snapshotEvery;
    const inline = !fits || (due && this.options.snapshotInBackground === false);
    const pinned = !inline && due && !l.snapshotting ? await l.session.pin() : undefined;
    // A commit that failed after its snapshot left one under this name: ours to replace.
    if (inline) await this.core.store.remove(snapshotName(id, call.seq));
    const snapshot = inline ? await this.saveState(l, snapshotName(id, call.seq)) : undefined;
    let previous: number | undefined;
    const last = lastOf(call);
    try {
      l.record = await j.records.update(
        id,
        (cur) => {
          previous = undefined;
          // The fence: a replica that lost the session to another commits nothing more of it.
          if (j.leases && cur.owner?.holder !== j.leases.id)
            throw DuelError.unavailable(
              `session '${id}' is served by trainer ${cur.owner?.holder || 'none'} now, not ${j.leases.id}: retry`,
            );
          // This very commit, written by an attempt whose answer was lost (NATS failing over): done.
          if (cur.seq === call.seq && sameCall(cur.last, last)) return undefined;
          if (cur.seq !== call.seq - 1)
            throw DuelError.failedPrecondition(
              `session '${id}' moved to seq ${cur.seq} elsewhere (another trainer serves it)`,
            );
          previous = cur.snapshot ? cur.snapshotSeq : undefined;
          return {
            ...cur,
            seq: call.seq,
            step: steps,
            last,
            ...(snapshot ? { snapshot, snapshotSeq: call.seq } : {}),
          };
        },
        this.caughtUp(id),
      );
      this.committed.set(id, call.seq);
    } catch (e) {
      await pinned?.release();
      throw e;
    }
    if (stepped) l.stepped?.();
    if (pinned) {
      l.snapshotStep = steps;
      l.snapshotting = this.snapshotLater(l, pinned, call.seq).finally(() => {
        l.snapshotting = undefined;
      });
    }
    if (snapshot) {
      l.snapshotStep = steps;
      await this.dropCovered(id, previous, call.seq);
    }
  }

  /**
   * Writes the state pinned at call `seq` into the store and makes it the session's snapshot,
   * while the session's next calls run. It is read once the next optimizer step has replaced the
   * pinned tensors (their buffers are then handed over, not copied, so the worker's next run does
   * not wait) or after SNAPSHOT_IDLE_MS without one. Until the record names it, the journal covers
   * the session as before: a trainer killed meanwhile restores from the previous snapshot, and what
   * it had written of this one is never read.
   */
  private async snapshotLater(l: Live, pinned: PinnedSnapshot, seq: number): Promise<void> {
    const id = l.record.sessionId;
    const name = snapshotName(id, seq);
    const t0 = performance.now();
    try {
      // The idle wait starts again with every call: read with a copy only when nothing runs.
      await new Promise<void>((resolve) => {
        let idle = setTimeout(resolve, SNAPSHOT_IDLE_MS);
        l.stepped = () => {
          clearTimeout(idle);
          resolve();
        };
        l.called = () => {
          clearTimeout(idle);
          idle = setTimeout(resolve, SNAPSHOT_IDLE_MS);
        };
      });
      l.stepped = undefined;
      l.called = undefined;
      const snapshot = await pinned.read();
      await this.core.store.remove(name);
      const ref = await this.publish(name, async (dir) => {
        try {
          return await writeSessionStateAsync(dir, { ...this.meta(l), snapshot });
        } finally {
          // The state's bytes, read back only to be written: freed now, not by the collector.
          freeHostTensors(Object.values(snapshot.tensors));
        }
      });
      const j = await this.journal();
      let previous: number | undefined;
      let adopted = false;
      const r = await j.records.update(
        id,
        (cur) => {
          // An attempt whose answer was lost may have written it already: then it is adopted.
          const ours = cur.snapshot?.uri === ref.uri && cur.snapshot.sha256 === ref.sha256;
          adopted = ours;
          // Not ours any more, or a later snapshot (a call too big for the journal) already there.
          if (
            ours ||
            (j.leases && cur.owner?.holder !== j.leases.id) ||
            (cur.snapshot && cur.snapshotSeq >= seq)
          )
            return undefined;
          previous = cur.snapshot ? cur.snapshotSeq : undefined;
          adopted = true;
          return { ...cur, snapshot: ref, snapshotSeq: seq };
        },
        this.caughtUp(id),
      );
      if (!adopted) {
        await this.core.store.remove(name);
        return;
      }
      l.record = { ...l.record, snapshot: r.snapshot, snapshotSeq: r.snapshotSeq };
      await this.dropCovered(id, previous, seq);
      this.options.log?.info(
        { session: id, seq, ms: Math.round(performance.now() - t0) },
        'training session snapshot written',
      );
    } catch (e) {
      l.stepped = undefined;
      l.called = undefined;
      await pinned.release().catch(() => {});
      await Promise.resolve(this.core.store.remove(name)).catch(() => {});
      this.options.log?.warn(
        { session: id, seq, err: (e as Error).message },
        'snapshot not written; the journal still covers the session',
      );
    }
  }

  /** What a snapshot at `seq` covers is garbage: a failure here leaves garbage, not a wrong state. */
  private async dropCovered(id: string, previous: number | undefined, seq: number): Promise<void> {
    const j = await this.journal();
    try {
      for (let s = (previous ?? 0) + 1; s <= seq; s++) await j.calls.delete(callKey(id, s));
      if (previous !== undefined) await this.core.store.remove(snapshotName(id, previous));
    } catch (e) {
      this.options.log?.warn({ session: id, err: (e as Error).message }, 'journal cleanup failed');
    }
  }

  /**
   * Writes a directory with `write` and publishes it as artifact `name` in the trainer's store:
   * a file store gets it built on its own filesystem and moved in, not copied (a snapshot of the
   * 21.9M model is 334 MiB).
   */
  private async publish(
    name: string,
    write: (dir: string) => Promise<ArtifactManifest | undefined>,
  ): Promise<ArtifactRef> {
    const store = this.core.store;
    const scratch =
      store instanceof FileArtifactStore ? store.scratch() : mkdtempSync(join(tmpdir(), 'duel-session-'));
    try {
      const dir = join(scratch, 'artifact');
      const manifest = await write(dir);
      return store instanceof FileArtifactStore
        ? store.put(dir, name, { move: true, ...(manifest ? { manifest } : {}) })
        : await store.put(dir, name);
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  }

  /** What a state artifact holds besides the tensors. */
  private meta(l: Live) {
    return { base: l.record.base!, optimizer: l.record.optimizer!, seed: l.record.seed, lora: l.record.lora };
  }

  /** The whole state as an artifact `name` (what LoadState resumes from). */
  saveState(l: Live, name: string): Promise<ArtifactRef> {
    return this.publish(name, async (dir) => {
      const snapshot = await l.session.snapshot();
      try {
        writeSessionState(dir, { ...this.meta(l), snapshot });
      } finally {
        freeHostTensors(Object.values(snapshot.tensors));
      }
      return undefined;
    });
  }

  /**
   * The current weights as a model directory `name` (what `duel sample` and run specs load); for a
   * LoRA session the adapter as a PEFT directory, on the session's base.
   */
  async saveWeights(l: Live, name: string): Promise<ModelRef> {
    const weights = await l.session.weights();
    if (l.session.lora) {
      const adapter = { config: l.session.lora, tensors: weights };
      const ref = await this.publish(name, async (dir) => {
        writeAdapterDir(dir, adapter, l.record.base!.name || 'base');
        return undefined;
      });
      return { artifact: l.record.base!.artifact, adapter: ref, name };
    }
    const artifact = await this.publish(name, async (dir) => {
      saveModelDir(dir, l.model.config, weights, { tokenizerFrom: l.model.dir });
      return undefined;
    });
    return { artifact, name, adapter: undefined };
  }

  /** Ends a session for good: its record, its journal and its snapshot. */
  async close(id: string): Promise<void> {
    const j = await this.journal();
    if (!(await j.records.get(id))) throw DuelError.notFound(`no training session '${id}'`);
    await this.drop(id);
    // Read after the drop: a snapshot written meanwhile is in the record now.
    const r = (await j.records.get(id))?.value;
    if (!r) return;
    await j.records.delete(id);
    for (const k of await j.calls.keys(`${id}.`)) await j.calls.delete(k);
    if (r.snapshot) await this.core.store.remove(snapshotName(id, r.snapshotSeq));
    if (r.clientToken) this.tokens.delete(r.clientToken);
    this.committed.delete(id);
  }

  /** Frees one session's memory once its calls in progress are done (its journal stays). */
  private async drop(id: string): Promise<void> {
    const l = this.live.get(id);
    this.live.delete(id);
    this.verified.delete(id);
    const live = await l?.catch(() => undefined);
    await live?.queue;
    // A snapshot being written finishes first (woken now if it waits for a step).
    live?.stepped?.();
    await live?.snapshotting;
    if (live) await this.closeLive(live);
  }

  /** Frees every session's memory (a trainer shutting down); their journals stay for the next one. */
  async release(): Promise<void> {
    for (const id of [...this.live.keys()]) await this.drop(id);
  }
}

/** Whether two journaled calls are the same call (their encodings). */
function sameCall(a: SessionCall | undefined, b: SessionCall): boolean {
  if (!a) return false;
  return Buffer.from(SessionCall.encode(a).finish()).equals(Buffer.from(SessionCall.encode(b).finish()));
}

/** The RPC a call kind comes from: forwardBackward → ForwardBackward. */
const rpcName = (kind: string | undefined) => (kind ? kind[0]!.toUpperCase() + kind.slice(1) : 'unknown');

const snapshotName = (id: string, seq: number) => `sessions/${id}/snapshot-${seq}`;

/** How long a pinned snapshot waits, with no call, before it is read with a copy (no step came). */
const SNAPSHOT_IDLE_MS = 2000;

/** The session id a client token names: a UUID's shape (version 8) over the token's SHA-256. */
export function sessionIdOfToken(token: string): string {
  const h = createHash('sha256').update(`duel-session:${token}`).digest('hex');
  const variant = ((Number.parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-8${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

export { forwardBackward, type Live, optimStep, TOKEN_LOSSES };
