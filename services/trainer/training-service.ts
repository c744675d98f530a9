/**
 * TrainingService: the gRPC face of the trainer's sessions (./sessions.ts holds what makes calls
 * retry-safe and sessions durable). Each handler checks its request, naming every bad field, and
 * hands a typed call to the sessions, or, when another trainer replica owns the session, forwards
 * it there (./forwarding.ts).
 */

import { parseSets, RECIPES, recipeFor } from '../../src/algorithms/recipes/index.js';
import { DuelError } from '../../src/errors.js';
import {
  type CloseSessionRequest,
  type CloseSessionResponse,
  type ComputeLogprobsRequest,
  type ComputeLogprobsResponse,
  type ForwardBackwardRequest,
  type ForwardBackwardResponse,
  type OptimStepRequest,
  type OptimStepResponse,
  type SaveStateRequest,
  type SaveStateResponse,
  type SaveWeightsRequest,
  type SaveWeightsResponse,
  type TrainingServiceClient,
  type TrainingServiceSampleRequest,
  type TrainingServiceSampleResponse,
  TrainingServiceService,
} from '../../src/gen/duel/v1/training.js';
import { generate } from '../../src/models/generate.js';
import { checkLora, checkModelRef, checkSampling } from '../../src/platform/contract-checks.js';
import type { CallContext } from '../../src/platform/grpc/handlers.js';
import { service } from '../../src/platform/grpc/server.js';
import { CompletionSource, completionOf, generateOptionsOf } from '../../src/platform/sampling.js';
import { spanAttributes } from '../../src/platform/tracing.js';
import { Violations } from '../../src/platform/violations.js';
import type { SessionForwarder } from './forwarding.js';
import {
  datumsFromWire,
  forwardBackward,
  isTokenLoss,
  optimStep,
  TOKEN_LOSSES,
  type TrainingSessions,
} from './sessions.js';

/** What one Sample call may ask for (the sampler's defaults). */
const SAMPLE_LIMITS = { maxSamples: 64, maxNewTokens: 4096 };

export function trainingService(sessions: TrainingSessions, forwarder?: SessionForwarder) {
  /** The owner's answer when another replica owns the session; undefined when it is served here. */
  const atOwner = async <Req extends { sessionId: string }, Res>(
    method: keyof TrainingServiceClient & string,
    req: Req,
    ctx: CallContext,
  ): Promise<Res | undefined> => {
    const seq = (req as { seq?: unknown }).seq;
    spanAttributes({
      'duel.session_id': req.sessionId,
      ...(seq !== undefined ? { 'duel.seq': Number(seq) } : {}),
    });
    if (!forwarder) return undefined;
    const route = await sessions.route(req.sessionId);
    return route.local ? undefined : forwarder.forward<Req, Res>(method, route, req, ctx);
  };
  const requireId = (v: Violations, id: string) => v.check(id !== '', 'session_id', 'is required');
  const requireSeq = (v: Violations, seq: number) => v.check(seq >= 1, 'seq', 'must be 1 or more');
  const checkSave = (req: { sessionId: string; seq: number; name: string }) => {
    const v = new Violations();
    requireId(v, req.sessionId);
    requireSeq(v, Number(req.seq));
    v.check(req.name !== '', 'name', 'is required');
    v.throwIfAny();
  };
  return service(TrainingServiceService, {
    async createSession(req) {
      const v = new Violations();
      checkModelRef(v, req.base, 'base');
      v.check(!req.base?.adapter, 'base.adapter', 'is not supported: a session starts from a base model');
      if (req.lora) checkLora(v, req.lora, 'lora');
      v.throwIfAny();
      return {
        sessionId: await sessions.create(
          {
            base: req.base!,
            optimizer: req.optimizer,
            seed: req.seed ?? 0,
            lora: req.lora,
            checkpointing: req.gradientCheckpointing,
          },
          req.clientToken,
        ),
      };
    },

    async loadState(req) {
      const v = new Violations();
      v.check(!!req.state?.uri, 'state.uri', 'is required');
      v.check(
        /^[0-9a-f]{64}$/.test(req.state?.sha256 ?? ''),
        'state.sha256',
        'must be 64 lower-case hex digits',
      );
      v.throwIfAny();
      return {
        sessionId: await sessions.create(
          { state: req.state!, checkpointing: req.gradientCheckpointing },
          req.clientToken,
        ),
      };
    },

    async forwardBackward(req, ctx) {
      const v = new Violations();
      requireId(v, req.sessionId);
      requireSeq(v, Number(req.seq));
      const pairwise = Object.hasOwn(RECIPES, req.loss);
      v.check(
        isTokenLoss(req.loss) || pairwise,
        'loss',
        `must be one of ${[...TOKEN_LOSSES, ...Object.keys(RECIPES)].join(', ')}, got '${req.loss}'`,
      );
      v.check(req.data.length > 0, 'data', 'is empty');
      req.data.forEach((d, i) => {
        if (pairwise)
          v.check(!!d.roundRecord, `data[${i}].round_record`, `is required by the pairwise loss ${req.loss}`);
        else if (isTokenLoss(req.loss))
          v.check(!d.roundRecord, `data[${i}].round_record`, `is for the pairwise losses, not ${req.loss}`);
      });
      if (pairwise) {
        try {
          recipeFor(req.loss, parseSets(Object.entries(req.lossConfig).map(([k, x]) => `${k}=${x}`)));
        } catch (e) {
          if (!(e instanceof DuelError)) throw e;
          for (const x of e.violations) v.add(`loss_config.${x.field}`, x.description);
        }
      }
      if (isTokenLoss(req.loss)) {
        const unknown = Object.keys(req.lossConfig).filter((k) => k !== 'clip');
        v.check(unknown.length === 0, 'loss_config', `unknown key(s) ${unknown.join(', ')} (clip)`);
        if (req.lossConfig.clip !== undefined)
          v.check(
            Number.isFinite(Number(req.lossConfig.clip)),
            'loss_config.clip',
            `must be a number, got '${req.lossConfig.clip}'`,
          );
      }
      v.throwIfAny();
      const there = await atOwner<ForwardBackwardRequest, ForwardBackwardResponse>(
        'forwardBackward',
        req,
        ctx,
      );
      if (there) return there;
      const answer = await sessions.mutate(
        req.sessionId,
        Number(req.seq),
        { $case: 'forwardBackward', forwardBackward: req },
        async (l) => ({
          $case: 'forwardBackwardAnswer',
          forwardBackwardAnswer: await forwardBackward(l, req),
        }),
      );
      return answer.forwardBackwardAnswer;
    },

    async optimStep(req, ctx) {
      const v = new Violations();
      requireId(v, req.sessionId);
      requireSeq(v, Number(req.seq));
      if (req.learningRate !== undefined)
        v.check(req.learningRate > 0, 'learning_rate', `must be > 0, got ${req.learningRate}`);
      v.throwIfAny();
      const there = await atOwner<OptimStepRequest, OptimStepResponse>('optimStep', req, ctx);
      if (there) return there;
      const answer = await sessions.mutate(
        req.sessionId,
        Number(req.seq),
        { $case: 'optimStep', optimStep: req },
        async (l) => ({ $case: 'optimStepAnswer', optimStepAnswer: await optimStep(l, req) }),
      );
      return answer.optimStepAnswer;
    },

    async computeLogprobs(req, ctx) {
      const v = new Violations();
      requireId(v, req.sessionId);
      v.throwIfAny();
      const there = await atOwner<ComputeLogprobsRequest, ComputeLogprobsResponse>(
        'computeLogprobs',
        req,
        ctx,
      );
      if (there) return there;
      const logprobs = await sessions.read(req.sessionId, (l) =>
        l.session.computeLogprobs(datumsFromWire(req.data)),
      );
      return { logprobs: logprobs.map((values) => ({ values })) };
    },

    async sample(req, ctx) {
      const v = new Violations();
      requireId(v, req.sessionId);
      v.check(req.prompts.length > 0, 'prompts', 'must hold at least one prompt');
      req.prompts.forEach((p, i) => {
        v.check(
          p.tokenIds.length > 0,
          `prompts[${i}].token_ids`,
          'are required (a session samples token ids)',
        );
      });
      checkSampling(v, req.sampling, 'sampling', SAMPLE_LIMITS);
      v.throwIfAny();
      const there = await atOwner<TrainingServiceSampleRequest, TrainingServiceSampleResponse>(
        'sample',
        req,
        ctx,
      );
      if (there) return there;
      const p = req.sampling!;
      const samples = await sessions.read(req.sessionId, async (l) =>
        generate(
          await sessions.decoder(l),
          req.prompts.map((x) => [...x.tokenIds]),
          generateOptionsOf(p, l.model.config, ctx.signal),
        ),
      );
      return {
        samples: samples.map((g) => ({
          promptIndex: g.prompt,
          sampleIndex: g.sample,
          completion: completionOf(g, '', CompletionSource.COMPLETION_SOURCE_POLICY),
        })),
      };
    },

    async saveWeights(req, ctx) {
      checkSave(req);
      const there = await atOwner<SaveWeightsRequest, SaveWeightsResponse>('saveWeights', req, ctx);
      if (there) return there;
      const answer = await sessions.mutate(
        req.sessionId,
        Number(req.seq),
        { $case: 'saveWeights', saveWeights: req },
        async (l) => ({
          $case: 'saveWeightsAnswer',
          saveWeightsAnswer: { model: await sessions.saveWeights(l, req.name) },
        }),
      );
      return answer.saveWeightsAnswer;
    },

    async saveState(req, ctx) {
      checkSave(req);
      const there = await atOwner<SaveStateRequest, SaveStateResponse>('saveState', req, ctx);
      if (there) return there;
      const answer = await sessions.mutate(
        req.sessionId,
        Number(req.seq),
        { $case: 'saveState', saveState: req },
        async (l) => ({
          $case: 'saveStateAnswer',
          saveStateAnswer: { state: await sessions.saveState(l, req.name) },
        }),
      );
      return answer.saveStateAnswer;
    },

    async getSession(req) {
      return { session: await sessions.info(req.sessionId) };
    },

    async listSessions() {
      return { sessions: await sessions.list() };
    },

    async closeSession(req, ctx) {
      const there = await atOwner<CloseSessionRequest, CloseSessionResponse>('closeSession', req, ctx);
      if (there) return there;
      await sessions.close(req.sessionId);
      return {};
    },
  });
}
