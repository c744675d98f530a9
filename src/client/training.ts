/**
 * A TypeScript client of the trainer's TrainingService, for a training loop a user writes: each
 * session numbers its mutating calls itself, and a call that fails transiently (the trainer
 * restarting, a lost reply, a deadline) is sent again with the same seq until `retryWithinMs`
 * has passed; the service applies a seq once and answers its retries from the journal.
 */
import type * as grpc from '@grpc/grpc-js';
import { DuelError } from '../errors.js';
import type { ArtifactRef, Metrics, ModelRef, RoundRecord } from '../gen/duel/v1/common.js';
import { LoraSpec, OptimizerConfig, SamplingParams } from '../gen/duel/v1/common.js';
import {
  type SessionSample,
  TrainingServiceClient,
  type TrainingSessionInfo,
} from '../gen/duel/v1/training.js';
import { callUnary, isTransient } from '../platform/grpc/client.js';
import { channelCredentials, clientTlsFromEnv } from '../platform/tls.js';

/** One sequence of a ForwardBackward or ComputeLogprobs call (see TrainingDatum in training.proto). */
export interface Datum {
  promptIds: number[];
  completionIds: number[];
  /** cross_entropy's per-token weights (default 1). */
  tokenWeights?: number[];
  /** importance_sampling's and ppo's per-token advantages. */
  advantages?: number[];
  /** The sampler's per-token log-probs (importance_sampling, ppo). */
  samplingLogprobs?: number[];
}

export interface TrainingClientOptions {
  /** Default: TLS from DUEL_TLS_* when set, else plaintext. */
  credentials?: grpc.ChannelCredentials;
  /** Each attempt's deadline (default 10 minutes: a step of a large model is slow). */
  deadlineMs?: number;
  /** How long transient failures are retried with the same seq (default 2 minutes). */
  retryWithinMs?: number;
}

const toWire = (data: Datum[]) =>
  data.map((d) => ({
    promptIds: d.promptIds,
    completionIds: d.completionIds,
    tokenWeights: d.tokenWeights ?? [],
    advantages: d.advantages ?? [],
    samplingLogprobs: d.samplingLogprobs ?? [],
  }));

/** A gRPC target for one address or several IPv4 ones (grpc-js's `ipv4:a,b` list). */
function targetOf(address: string | string[]): string {
  if (typeof address === 'string') return address;
  if (address.length === 1) return address[0]!;
  const bad = address.find((a) => !/^\d{1,3}(\.\d{1,3}){3}:\d+$/.test(a));
  if (bad !== undefined)
    throw DuelError.invalidArgument([
      {
        field: 'address',
        description: `several replicas are given as IPv4 host:port (or one dns:///name:port), got '${bad}'`,
      },
    ]);
  return `ipv4:${address.join(',')}`;
}

export class TrainingClient {
  private readonly client: TrainingServiceClient;
  private readonly deadlineMs: number;
  private readonly retryWithinMs: number;

  /**
   * `address`: one trainer (host:port), a name that resolves to every replica (`dns:///host:port`,
   * a Kubernetes headless Service), or several IPv4 replicas. Calls go round-robin over the
   * replicas that answer; whichever replica a call reaches serves it (forwarding it to the
   * session's owner), so a dead replica costs only the retries of its calls in flight.
   */
  constructor(address: string | string[], o: TrainingClientOptions = {}) {
    this.client = new TrainingServiceClient(
      targetOf(address),
      o.credentials ?? channelCredentials(clientTlsFromEnv()),
      {
        'grpc.service_config': JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
        // This client retries every 250 ms, but a channel whose trainer was down reconnects only
        // when its backoff allows (growing 1.6× a failure toward 120 s): a trainer back after a
        // few seconds would wait that long for a call. Capped, a restart costs ≤ 2 s more.
        'grpc.initial_reconnect_backoff_ms': 250,
        'grpc.max_reconnect_backoff_ms': 2000,
      },
    );
    this.deadlineMs = o.deadlineMs ?? 600_000;
    this.retryWithinMs = o.retryWithinMs ?? 120_000;
  }

  /** Sends `req` until it is answered, refused, or transient failures outlast the retry window. */
  async call<Req, Res>(method: keyof TrainingServiceClient & string, req: Req): Promise<Res> {
    const fn = this.client[method] as never;
    const firstFailure = { at: undefined as number | undefined };
    for (;;) {
      try {
        return await callUnary<Req, Res>(this.client, fn, req, { deadlineMs: this.deadlineMs }, method);
      } catch (e) {
        const err = DuelError.from(e);
        firstFailure.at ??= Date.now();
        if (!isTransient(err) || Date.now() - firstFailure.at > this.retryWithinMs) throw err;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }

  /** A new session (the same non-empty `clientToken` gives back the session it made before). */
  async createSession(o: {
    base: ModelRef;
    optimizer?: Partial<OptimizerConfig>;
    clientToken?: string;
    /** What the pairwise losses draw from, and a fresh adapter's initialisation (default 0). */
    seed?: number;
    /** Train a LoRA adapter of this shape on the base instead of every weight. */
    lora?: Partial<LoraSpec>;
    /** Recompute activations in the backward pass (default: the trainer's trainer.gradientCheckpointing). */
    gradientCheckpointing?: boolean;
  }): Promise<TrainingSessionHandle> {
    const { sessionId } = await this.call<object, { sessionId: string }>('createSession', {
      base: o.base,
      optimizer: OptimizerConfig.fromPartial(o.optimizer ?? {}),
      clientToken: o.clientToken ?? '',
      seed: o.seed,
      lora: o.lora && LoraSpec.fromPartial(o.lora),
      gradientCheckpointing: o.gradientCheckpointing,
    });
    return this.attach(sessionId);
  }

  /** A new session from a SaveState artifact. */
  async loadState(
    state: ArtifactRef,
    clientToken = '',
    o: { gradientCheckpointing?: boolean } = {},
  ): Promise<TrainingSessionHandle> {
    const { sessionId } = await this.call<object, { sessionId: string }>('loadState', {
      state,
      clientToken,
      gradientCheckpointing: o.gradientCheckpointing,
    });
    return this.attach(sessionId);
  }

  /** A handle on an existing session, numbering on from the last seq it applied. */
  async attach(sessionId: string): Promise<TrainingSessionHandle> {
    const { session } = await this.call<object, { session: TrainingSessionInfo }>('getSession', {
      sessionId,
    });
    return new TrainingSessionHandle(this, sessionId, session.seq);
  }

  async listSessions(): Promise<TrainingSessionInfo[]> {
    return (await this.call<object, { sessions: TrainingSessionInfo[] }>('listSessions', {})).sessions;
  }

  close(): void {
    this.client.close();
  }
}

export class TrainingSessionHandle {
  constructor(
    private readonly client: TrainingClient,
    readonly id: string,
    /** The last seq applied. */
    public seq: number,
  ) {}

  /** A mutating call under the next seq; the seq advances once the call is answered. */
  private async next<Res>(method: keyof TrainingServiceClient & string, req: object): Promise<Res> {
    const res = await this.client.call<object, Res>(method, {
      sessionId: this.id,
      seq: this.seq + 1,
      ...req,
    });
    this.seq += 1;
    return res;
  }

  /** Adds the gradient of `loss` on `data`; gradients accumulate until `optimStep`. */
  forwardBackward(
    loss: 'cross_entropy' | 'importance_sampling' | 'ppo',
    data: Datum[],
    lossConfig: Record<string, string> = {},
  ): Promise<{ loss: number; metrics?: Metrics }> {
    return this.next('forwardBackward', { loss, lossConfig, data: toWire(data) });
  }

  /**
   * Adds the gradient of a pairwise loss — a round recipe by its algorithm name (`sppo`, `inpo`,
   * `online_dpo`, …) with its hyper-parameters — on round records (K completions and their K×K
   * preferences each).
   */
  forwardBackwardRecords(
    algorithm: string,
    records: RoundRecord[],
    hyperparameters: Record<string, string | number> = {},
  ): Promise<{ loss: number; metrics?: Metrics }> {
    return this.next('forwardBackward', {
      loss: algorithm,
      lossConfig: Object.fromEntries(Object.entries(hyperparameters).map(([k, v]) => [k, String(v)])),
      data: records.map((roundRecord) => ({
        promptIds: [],
        completionIds: [],
        tokenWeights: [],
        advantages: [],
        samplingLogprobs: [],
        roundRecord,
      })),
    });
  }

  optimStep(learningRate?: number): Promise<{ step: number; metrics?: Metrics }> {
    return this.next('optimStep', learningRate === undefined ? {} : { learningRate });
  }

  /** Per-token log-probs of each datum's completion under the current weights. */
  async computeLogprobs(data: Datum[]): Promise<number[][]> {
    const res = await this.client.call<object, { logprobs: { values: number[] }[] }>('computeLogprobs', {
      sessionId: this.id,
      data: toWire(data),
    });
    return res.logprobs.map((l) => l.values);
  }

  /**
   * Completions of token-id prompts drawn from the current weights, with log π_θ per token (what
   * importance_sampling and ppo take as sampling_logprobs).
   */
  async sample(prompts: number[][], sampling: Partial<SamplingParams>): Promise<SessionSample[]> {
    const res = await this.client.call<object, { samples: SessionSample[] }>('sample', {
      sessionId: this.id,
      prompts: prompts.map((tokenIds) => ({ tokenIds, text: '', id: '' })),
      sampling: SamplingParams.fromPartial(sampling),
    });
    return res.samples;
  }

  async saveWeights(name: string): Promise<ModelRef> {
    return (await this.next<{ model: ModelRef }>('saveWeights', { name })).model;
  }

  async saveState(name: string): Promise<ArtifactRef> {
    return (await this.next<{ state: ArtifactRef }>('saveState', { name })).state;
  }

  async info(): Promise<TrainingSessionInfo> {
    return (
      await this.client.call<object, { session: TrainingSessionInfo }>('getSession', { sessionId: this.id })
    ).session;
  }

  async close(): Promise<void> {
    await this.client.call('closeSession', { sessionId: this.id });
  }
}
