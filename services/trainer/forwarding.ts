/**
 * Forwarding a training session's call to the trainer replica that owns it. Forwarding, rather
 * than answering with the owner's address for the client to follow, keeps every client as it is
 * (the TypeScript and Python clients, grpcurl, any client generated from the protos) and works behind one Kubernetes
 * Service address, where a client cannot pick a pod; its cost is one more loopback or pod-network
 * hop per call (a ForwardBackward's request is a few KB of ids). A forwarded call carries
 * FORWARDED_BY and is never forwarded again: a replica that is not the owner either answers
 * UNAVAILABLE, which the first replica passes on and the client retries after routing afresh.
 */
import type * as grpc from '@grpc/grpc-js';
import { DuelError } from '../../src/errors.js';
import { TrainingServiceClient } from '../../src/gen/duel/v1/training.js';
import { callUnary } from '../../src/platform/grpc/client.js';
import type { CallContext } from '../../src/platform/grpc/handlers.js';

export const FORWARDED_BY = 'x-duel-forwarded-by';

/** The metadata a forwarded call keeps: the run and round its log lines carry. */
const KEPT = ['x-duel-run', 'x-duel-round'];

export class SessionForwarder {
  private readonly clients = new Map<string, TrainingServiceClient>();

  constructor(
    /** This replica's id, named in FORWARDED_BY. */
    private readonly self: () => string,
    private readonly credentials: grpc.ChannelCredentials,
    private readonly channelOptions: grpc.ChannelOptions = {},
    /** Each forwarded call's deadline (a step of a large model is slow). */
    private readonly deadlineMs = 600_000,
  ) {}

  /** Whether this call was forwarded here by another replica. */
  static forwarded(ctx: CallContext): boolean {
    return ctx.metadata.get(FORWARDED_BY).length > 0;
  }

  /**
   * Sends the call to the owner and returns its answer. A paused owner keeps its connections open
   * and answers nothing, so the call is also given up (UNAVAILABLE, which the client retries) as
   * soon as `to.alive()` says the owner's lease died: the retry finds the session taken over.
   */
  async forward<Req, Res>(
    method: keyof TrainingServiceClient & string,
    to: { address: string; owner: string; alive: () => boolean; checkEveryMs: number },
    req: Req,
    ctx: CallContext,
  ): Promise<Res> {
    const { address, owner } = to;
    if (SessionForwarder.forwarded(ctx))
      throw DuelError.unavailable(
        `this trainer does not serve the session (${owner} at ${address} does) and does not forward a forwarded call: retry`,
      );
    let client = this.clients.get(address);
    if (!client) {
      client = new TrainingServiceClient(address, this.credentials, this.channelOptions);
      this.clients.set(address, client);
    }
    const metadata: Record<string, string> = { [FORWARDED_BY]: this.self() };
    for (const key of KEPT) {
      const v = ctx.metadata.get(key)[0];
      if (typeof v === 'string') metadata[key] = v;
    }
    const gone = new AbortController();
    const watch = setInterval(() => {
      if (!to.alive()) gone.abort();
    }, to.checkEveryMs);
    try {
      return await callUnary<Req, Res>(
        client,
        client[method] as never,
        req,
        { deadlineMs: this.deadlineMs, signal: AbortSignal.any([ctx.signal, gone.signal]), metadata },
        `trainer ${owner} (${address}): ${method}`,
      );
    } catch (e) {
      if (gone.signal.aborted && !ctx.signal.aborted)
        throw DuelError.unavailable(`trainer ${owner} (${address}) stopped renewing its lease: retry`, e);
      throw e;
    } finally {
      clearInterval(watch);
    }
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
