/**
 * The work of each round stage as calls to the workers: sample (sharded over samplers), compare
 * (sharded over scorers), train (the trainer) and evaluate (samplers and scorers again). Each
 * function is deterministic for a given run, round and seed, so a restarted orchestrator that
 * repeats a stage gets the same data, and the trainer recognises a round it already trained.
 */
import { groupWinRate } from '../../src/algorithms/estimators.js';
import type { SamplingPlan } from '../../src/algorithms/round-plan.js';
import { DuelError } from '../../src/errors.js';
import type { Completion, Matrix, ModelRef, RoundRecord } from '../../src/gen/duel/v1/common.js';
import type { RunSpec } from '../../src/gen/duel/v1/runs.js';
import type { PolicySamplerServiceClient, SampleRequest } from '../../src/gen/duel/v1/sampler.js';
import {
  type CompareItem,
  type PreferenceScorerServiceClient,
  ProbMode,
} from '../../src/gen/duel/v1/scorer.js';
import type {
  TrainerServiceClient,
  TrainRoundRequest,
  TrainRoundResponse,
} from '../../src/gen/duel/v1/trainer.js';
import {
  type CallOptions,
  callClientStream,
  callServerStream,
  callUnary,
  isTransient,
} from '../../src/platform/grpc/client.js';
import { ROUND_METADATA, RUN_METADATA } from '../../src/platform/grpc/handlers.js';
import type { Logger } from '../../src/platform/logger.js';
import type { ReplicaPool } from './replicas.js';

export interface Workers {
  samplers: ReplicaPool<PolicySamplerServiceClient>;
  scorers: ReplicaPool<PreferenceScorerServiceClient>;
  trainer: { address: string; client: TrainerServiceClient };
}

export interface StageContext {
  runId: string;
  round: number;
  spec: RunSpec;
  workers: Workers;
  signal: AbortSignal;
  log: Logger;
  /** Deadline of one sampling or scoring call, and of the whole training call. */
  callDeadlineMs: number;
  trainDeadlineMs: number;
  /** Prompts per Sample/Compare call (the shard size). */
  promptsPerCall: number;
  /** How long the trainer may stay unreachable before the round fails. */
  maxWaitMs: number;
}

const callOptions = (c: StageContext, deadlineMs: number): CallOptions => ({
  deadlineMs,
  signal: c.signal,
  metadata: { [RUN_METADATA]: c.runId, [ROUND_METADATA]: String(c.round) },
});

function chunks<T>(xs: T[], n: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}

/** A 64-bit seed per (run seed, round, purpose) that stays the same when a round is repeated. */
function stageSeed(spec: RunSpec, round: number, purpose: number): number {
  const base = spec.seed ?? 0;
  return (base * 1_000_003 + round * 7919 + purpose * 104_729) % Number.MAX_SAFE_INTEGER;
}

/**
 * `n` completions per prompt from `model` (or the mixture with `mixtureRef`), shard by shard over
 * the samplers; result[p] holds prompt p's completions in sample order.
 */
async function sampleCompletions(
  c: StageContext,
  model: ModelRef,
  prompts: number[][],
  n: number,
  seed: number,
  mixture?: { reference: ModelRef; coef: number },
): Promise<Completion[][]> {
  if (n === 0) return prompts.map(() => []);
  const shards = chunks(
    prompts.map((p, i) => ({ p, i })),
    c.promptsPerCall,
  );
  const results = await c.workers.samplers.map(
    shards,
    async (client, shard, signal) => {
      const req: SampleRequest = {
        model,
        prompts: shard.map(({ p, i }) => ({ tokenIds: p, text: '', id: String(i) })),
        params: { ...c.spec.sampling!, numSamples: n, seed },
        mixtureReference: mixture?.reference,
        mixtureCoef: mixture?.coef ?? 0,
      };
      const out = await callServerStream(
        client,
        client.sample,
        req,
        { ...callOptions(c, c.callDeadlineMs), signal },
        'sampler Sample',
      );
      const got = shard.map(() => new Array<Completion>(n));
      for (const m of out) got[m.promptIndex]![m.sampleIndex] = m.completion!;
      if (got.some((cs) => cs.some((x) => x === undefined)))
        throw DuelError.internal('a sampler ended its stream before every completion arrived');
      return got;
    },
    c.spec.maxReplicas,
    c.signal,
  );
  return results.flat();
}

/** K×K preference matrices for each prompt's candidates, shard by shard over the scorers. */
async function comparePrompts(
  c: StageContext,
  prompts: number[][],
  candidates: Completion[][],
): Promise<Matrix[]> {
  const items: CompareItem[] = prompts.map((p, i) => ({
    prompt: { tokenIds: p, text: '', id: String(i) },
    candidates: candidates[i]!,
  }));
  const results = await c.workers.scorers.map(
    chunks(items, c.promptsPerCall),
    async (client, shard, signal) => {
      const res = await callUnary(
        client,
        client.compare,
        { judge: c.spec.judge, items: shard, probMode: ProbMode.PROB_MODE_PAIRWISE, temperature: undefined },
        { ...callOptions(c, c.callDeadlineMs), signal },
        'scorer Compare',
      );
      return res.comparisons.map((x) => x.prefs!);
    },
    c.spec.maxReplicas,
    c.signal,
  );
  return results.flat();
}

/** The round's records before judging: each prompt's completions, the policy's first, then the mixture's. */
export async function sampleRound(
  c: StageContext,
  policy: ModelRef,
  policyVersion: number,
  prompts: number[][],
  plan: SamplingPlan,
): Promise<RoundRecord[]> {
  const seed = stageSeed(c.spec, c.round, 1);
  const own = await sampleCompletions(c, policy, prompts, plan.fromPolicy, seed);
  const mixed = await sampleCompletions(c, policy, prompts, plan.fromMixture, seed + 1, {
    reference: c.spec.reference!,
    coef: plan.mixtureCoef,
  });
  return prompts.map((p, i) => ({
    promptIds: p,
    prompt: '',
    completions: [...own[i]!, ...mixed[i]!],
    prefs: undefined,
    policyVersion,
  }));
}

/** The same records with the judge's K×K preference matrix of each. */
export async function scoreRound(c: StageContext, records: RoundRecord[]): Promise<RoundRecord[]> {
  const prefs = await comparePrompts(
    c,
    records.map((r) => r.promptIds),
    records.map((r) => r.completions),
  );
  return records.map((r, i) => ({ ...r, prefs: prefs[i] }));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One TrainRound call, repeated while the trainer is unreachable or busy (a restarted orchestrator
 * may find it still finishing the call its previous life made). The trainer answers a repeated
 * round with the checkpoint it already published, so a repeat never trains twice.
 */
export async function trainOnRecords(
  c: StageContext,
  /** π_t: the model the round trains, its version, and how far records may lag it. */
  policy: { model: ModelRef; version: number; maxStaleness: number },
  records: RoundRecord[],
  outputName: string,
  hyperparameters: Record<string, string>,
  reference: ModelRef | undefined,
): Promise<TrainRoundResponse> {
  const requests: TrainRoundRequest[] = [
    {
      kind: {
        $case: 'config',
        config: {
          runId: c.runId,
          round: c.round,
          algorithm: c.spec.algorithm,
          policy: policy.model,
          policyVersion: policy.version,
          maxStaleness: policy.maxStaleness,
          reference,
          hyperparameters,
          optimizer: c.spec.optimizer,
          seed: stageSeed(c.spec, c.round, 2),
          outputUri: outputName,
          lora: c.spec.lora,
        },
      },
    },
    ...records.map((record): TrainRoundRequest => ({ kind: { $case: 'record', record } })),
  ];
  const { client, address } = c.workers.trainer;
  const start = Date.now();
  for (let backoff = 250; ; backoff = Math.min(backoff * 2, 5000)) {
    try {
      return await callClientStream(
        client,
        client.trainRound,
        requests,
        callOptions(c, c.trainDeadlineMs),
        'trainer TrainRound',
      );
    } catch (e) {
      const err = DuelError.from(e);
      if (c.signal.aborted || !isTransient(err) || Date.now() - start > c.maxWaitMs) throw err;
      c.log.warn({ trainer: address, err: err.message }, 'trainer unavailable; retrying');
      await sleep(backoff);
    }
  }
}

/**
 * Win rates of `candidate` against `reference` and `previous` on held-out prompts: each draws
 * `n` completions per prompt with the same seed every round, the judge compares all of them at
 * once, and a win rate is the mean of P(y ≻ y') over the candidate's completions y and the
 * opponent's y'.
 */
export async function evaluatePolicy(
  c: StageContext,
  prompts: number[][],
  n: number,
  candidate: ModelRef,
  reference: ModelRef,
  previous: ModelRef,
): Promise<Record<string, number>> {
  const seed = stageSeed(c.spec, 0, 3);
  const [mine, ref, prev] = [
    await sampleCompletions(c, candidate, prompts, n, seed),
    await sampleCompletions(c, reference, prompts, n, seed),
    await sampleCompletions(c, previous, prompts, n, seed),
  ];
  const prefs = await comparePrompts(
    c,
    prompts,
    prompts.map((_, i) => [...mine[i]!, ...ref[i]!, ...prev[i]!]),
  );
  const rows = prefs.map((m) =>
    Array.from({ length: m.rows }, (_, i) => m.values.slice(i * m.cols, (i + 1) * m.cols)),
  );
  const length = (xs: Completion[][]) =>
    xs.flat().reduce((s, x) => s + x.tokenIds.length, 0) / Math.max(1, xs.flat().length);
  return {
    win_rate_vs_ref: groupWinRate(rows, [0, n], [n, 2 * n]),
    win_rate_vs_prev: groupWinRate(rows, [0, n], [2 * n, 3 * n]),
    eval_length: length(mine),
  };
}
