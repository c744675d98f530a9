/**
 * TrainingService: sessions a client's own loop drives, a thin adapter from the gRPC contract to
 * src/algorithms/session.ts. What makes the calls safe to retry lives here: each session records
 * the last mutating call (its seq, what it was and its answer); the same seq again gets that answer
 * back without applying anything, any other seq but the next is FAILED_PRECONDITION naming the
 * expected one. Sessions are held in memory (the trainer's artifact store keeps what SaveWeights
 * wrote).
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TOKEN_LOSSES, type TokenLoss, TrainingSession } from '../../src/algorithms/session.js';
import {
  loopSettings,
  parseTrainingSettings,
  settingsFromWire,
} from '../../src/algorithms/training-settings.js';
import { DuelError } from '../../src/errors.js';
import type { ModelRef } from '../../src/gen/duel/v1/common.js';
import {
  type ForwardBackwardResponse,
  type OptimStepResponse,
  type SaveWeightsResponse,
  TrainingServiceService,
  type TrainingSessionInfo,
} from '../../src/gen/duel/v1/training.js';
import type { LoadedModel } from '../../src/models/model-dir.js';
import { loadModelDir, saveModelDir } from '../../src/models/model-dir.js';
import { checkModelRef } from '../../src/platform/contract-checks.js';
import { service } from '../../src/platform/grpc/server.js';
import { Violations } from '../../src/platform/violations.js';
import type { TrainerCore } from './service.js';

type Answer = ForwardBackwardResponse | OptimStepResponse | SaveWeightsResponse;

interface Entry {
  id: string;
  base: ModelRef;
  model: LoadedModel;
  session: TrainingSession;
  clientToken: string;
  /** The last mutating call applied: its seq, its RPC and its answer. */
  seq: number;
  last?: { rpc: string; answer: Answer };
  /** One call at a time per session, in seq order. */
  queue: Promise<unknown>;
}

export class TrainingSessions {
  private readonly sessions = new Map<string, Entry>();
  private readonly byToken = new Map<string, Promise<string>>();

  constructor(readonly core: TrainerCore) {}

  create(
    base: ModelRef,
    optimizer: Parameters<typeof settingsFromWire>[0],
    clientToken: string,
  ): Promise<string> {
    const existing = clientToken ? this.byToken.get(clientToken) : undefined;
    if (existing) return existing;
    const made = (async () => {
      const settings = parseTrainingSettings(settingsFromWire(optimizer), (key) => `optimizer.${key}`);
      const loop = loopSettings(settings, 0);
      const model = loadModelDir(await this.core.resolve(base.artifact!));
      const session = await TrainingSession.create(this.core.runtime, {
        config: model.config,
        weights: model.weights,
        optimizer: loop.optimizer,
        gradClip: loop.gradClip,
        lr: loop.lr,
      });
      const id = randomUUID();
      this.sessions.set(id, { id, base, model, session, clientToken, seq: 0, queue: Promise.resolve() });
      return id;
    })();
    if (clientToken) {
      this.byToken.set(clientToken, made);
      made.catch(() => this.byToken.delete(clientToken));
    }
    return made;
  }

  get(id: string): Entry {
    const e = this.sessions.get(id);
    if (!e) throw DuelError.notFound(`no training session '${id}'`);
    return e;
  }

  info(e: Entry): TrainingSessionInfo {
    return { sessionId: e.id, base: e.base, seq: e.seq, step: e.session.steps };
  }

  list(): Entry[] {
    return [...this.sessions.values()];
  }

  /**
   * Runs a mutating call once: seq = last + 1 applies it; seq = last answers what it answered
   * (the same RPC only); anything else is refused naming the expected seq.
   */
  mutate<A extends Answer>(
    id: string,
    seq: number,
    rpc: string,
    apply: (e: Entry) => Promise<A>,
  ): Promise<A> {
    const e = this.get(id);
    const run = e.queue.then(async () => {
      if (seq === e.seq && e.last) {
        if (e.last.rpc !== rpc)
          throw DuelError.failedPrecondition(
            `seq ${seq} was a ${e.last.rpc} call; a retry must repeat it (the next new call is seq ${e.seq + 1})`,
          );
        return e.last.answer as A;
      }
      if (seq !== e.seq + 1)
        throw DuelError.failedPrecondition(`session '${id}' expects seq ${e.seq + 1}, got ${seq}`);
      const answer = await apply(e);
      e.seq = seq;
      e.last = { rpc, answer };
      return answer;
    });
    e.queue = run.catch(() => {});
    return run;
  }

  async close(id: string): Promise<void> {
    const e = this.get(id);
    this.sessions.delete(id);
    if (e.clientToken) this.byToken.delete(e.clientToken);
    await e.queue;
    await e.session.close();
  }

  async closeAll(): Promise<void> {
    for (const id of [...this.sessions.keys()]) await this.close(id);
  }
}

const ids = (xs: readonly number[]) => [...xs];

export function trainingService(sessions: TrainingSessions) {
  const requireId = (v: Violations, id: string) => v.check(id !== '', 'session_id', 'is required');
  const requireSeq = (v: Violations, seq: number) => v.check(seq >= 1, 'seq', 'must be 1 or more');
  return service(TrainingServiceService, {
    async createSession(req) {
      const v = new Violations();
      checkModelRef(v, req.base, 'base');
      v.check(
        !req.base?.adapter,
        'base.adapter',
        'is not supported yet: a session trains every weight of a model',
      );
      v.throwIfAny();
      return { sessionId: await sessions.create(req.base!, req.optimizer, req.clientToken) };
    },

    async forwardBackward(req) {
      const v = new Violations();
      requireId(v, req.sessionId);
      requireSeq(v, Number(req.seq));
      v.check(
        (TOKEN_LOSSES as readonly string[]).includes(req.loss),
        'loss',
        `must be one of ${TOKEN_LOSSES.join(', ')}, got '${req.loss}'`,
      );
      const unknown = Object.keys(req.lossConfig).filter((k) => k !== 'clip');
      v.check(unknown.length === 0, 'loss_config', `unknown key(s) ${unknown.join(', ')} (clip)`);
      const clip = req.lossConfig.clip === undefined ? undefined : Number(req.lossConfig.clip);
      v.throwIfAny();
      return sessions.mutate(req.sessionId, Number(req.seq), 'ForwardBackward', async (e) => {
        const data = req.data.map((d) => ({
          promptIds: ids(d.promptIds),
          completionIds: ids(d.completionIds),
          ...(d.weights.length ? { weights: [...d.weights] } : {}),
          ...(d.samplingLogprobs.length ? { samplingLogprobs: [...d.samplingLogprobs] } : {}),
        }));
        const loss = await e.session.forwardBackward(
          req.loss as TokenLoss,
          data,
          clip === undefined ? {} : { clip },
        );
        const tokens = data.reduce((n, d) => n + d.completionIds.length, 0);
        return { loss, metrics: { values: { completion_tokens: tokens, sequences: data.length } } };
      });
    },

    async optimStep(req) {
      const v = new Violations();
      requireId(v, req.sessionId);
      requireSeq(v, Number(req.seq));
      if (req.learningRate !== undefined)
        v.check(req.learningRate > 0, 'learning_rate', `must be > 0, got ${req.learningRate}`);
      v.throwIfAny();
      return sessions.mutate(req.sessionId, Number(req.seq), 'OptimStep', async (e) => {
        const m = await e.session.optimStep(req.learningRate);
        return {
          step: e.session.steps,
          metrics: { values: { loss: m.loss, grad_norm: m.gradNorm, lr: m.lr, applied: m.applied ? 1 : 0 } },
        };
      });
    },

    async saveWeights(req) {
      const v = new Violations();
      requireId(v, req.sessionId);
      requireSeq(v, Number(req.seq));
      v.check(req.name !== '', 'name', 'is required');
      v.throwIfAny();
      return sessions.mutate(req.sessionId, Number(req.seq), 'SaveWeights', async (e) => {
        const scratch = mkdtempSync(join(tmpdir(), 'duel-session-'));
        try {
          const dir = join(scratch, 'model');
          saveModelDir(dir, e.model.config, await e.session.weights(), { tokenizerFrom: e.model.dir });
          return {
            model: {
              artifact: await sessions.core.store.put(dir, req.name),
              name: req.name,
              adapter: undefined,
            },
          };
        } finally {
          rmSync(scratch, { recursive: true, force: true });
        }
      });
    },

    async getSession(req) {
      return { session: sessions.info(sessions.get(req.sessionId)) };
    },

    async listSessions() {
      return { sessions: sessions.list().map((e) => sessions.info(e)) };
    },

    async closeSession(req) {
      await sessions.close(req.sessionId);
      return {};
    },
  });
}
