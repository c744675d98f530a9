/**
 * Adapts async-function handlers to @grpc/grpc-js's callback API, one adapter per call shape:
 * unary → `async (req, ctx) => res`, server streaming → `async function* (req, ctx)`, client
 * streaming → `async (requests, ctx) => res`. Every error leaves as a deliberate status
 * (DuelError.from), and ctx.signal aborts when the client cancels or the deadline passes, so
 * long work can stop early.
 */
import type { PeerCertificate } from 'node:tls';
import type * as grpc from '@grpc/grpc-js';
import { Code, codeName, DuelError } from '../../errors.js';
import type { Logger } from '../logger.js';
import { type EndSpan, inServerSpan } from '../tracing.js';
import { toStatus } from './status-details.js';

/** What a handler knows about its call. */
export interface CallContext {
  /** Aborted on client cancellation or deadline expiry. */
  signal: AbortSignal;
  metadata: grpc.Metadata;
  peer: string;
  /** The client's certificate under mutual TLS. */
  clientCertificate: PeerCertificate | undefined;
  /** Full method path, e.g. /duel.v1.PolicySamplerService/Sample. */
  method: string;
  /** The service's logger with this call's rpc, run and round fields. */
  log: Logger;
  /**
   * Aborted when the server starts draining. Calls of bounded length ignore it and finish;
   * streams that would run on indefinitely (watches) end, so the drain does not wait out its grace.
   */
  draining: AbortSignal;
}

/**
 * Metadata keys a caller (the orchestrator) sets so that every service's log lines of a call carry
 * the run and round they belong to.
 */
export const RUN_METADATA = 'x-duel-run';
export const ROUND_METADATA = 'x-duel-round';

function callFields(metadata: grpc.Metadata, method: string): Record<string, string | number> {
  const fields: Record<string, string | number> = { rpc: method };
  const run = metadata.get(RUN_METADATA)[0];
  const round = metadata.get(ROUND_METADATA)[0];
  if (typeof run === 'string' && run !== '') fields.run = run.slice(0, 128);
  if (typeof round === 'string' && /^\d{1,9}$/.test(round)) fields.round = Number(round);
  return fields;
}

/** Marks a message that failed to decode; replaces grpc-js's hard-coded INTERNAL answer. */
class MalformedMessage {
  constructor(readonly reason: string) {}
}

type MethodDef = grpc.MethodDefinition<unknown, unknown>;
type Req<M> = M extends { requestDeserialize: (b: Buffer) => infer R } ? R : never;
type Res<M> = M extends { responseSerialize: (v: infer R) => Buffer } ? R : never;

export type HandlerFor<M> = M extends { requestStream: false; responseStream: false }
  ? (request: Req<M>, ctx: CallContext) => Promise<Res<M>>
  : M extends { requestStream: false; responseStream: true }
    ? (request: Req<M>, ctx: CallContext) => AsyncIterable<Res<M>>
    : M extends { requestStream: true; responseStream: false }
      ? (requests: AsyncIterable<Req<M>>, ctx: CallContext) => Promise<Res<M>>
      : (requests: AsyncIterable<Req<M>>, ctx: CallContext) => AsyncIterable<Res<M>>;

export type ServiceHandlers<S> = { [K in keyof S]: HandlerFor<S[K]> };

/** The service definition with decoders that never throw (see MalformedMessage). */
export function tolerantDefinition(definition: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const out: Record<string, MethodDef> = {};
  for (const [name, method] of Object.entries(definition as Record<string, MethodDef>)) {
    out[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return method.requestDeserialize(bytes);
        } catch (error) {
          return new MalformedMessage(error instanceof Error ? error.message : String(error));
        }
      },
    };
  }
  return out as grpc.ServiceDefinition;
}

function checkDecoded<T>(message: T, method: string): T {
  if (message instanceof MalformedMessage) {
    throw DuelError.invalidArgument([
      { field: 'request', description: `not a valid message for ${method}: ${message.reason}` },
    ]);
  }
  return message;
}

/** The part of every server call shape that a context needs. */
interface SurfaceCall {
  metadata: grpc.Metadata;
  getPeer(): string;
  getAuthContext(): { sslPeerCertificate?: PeerCertificate } | null;
  getDeadline(): grpc.Deadline;
  on(event: 'cancelled', listener: () => void): unknown;
  removeListener(event: 'cancelled', listener: () => void): unknown;
}

/** How early grpc-js's own deadline timer may fire relative to Date.now(). */
const DEADLINE_SLACK_MS = 25;

function contextOf(
  call: SurfaceCall,
  method: string,
  log: Logger,
  draining: AbortSignal,
): { ctx: CallContext; done: () => void } {
  const controller = new AbortController();
  const deadline = call.getDeadline();
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  const expired = () => controller.abort(new DuelError(Code.DEADLINE_EXCEEDED, 'the call deadline passed'));
  // grpc-js reports an expired deadline as 'cancelled' too, and its timer may fire a few ms before
  // Date.now() reaches the deadline (timer rounding); the handler deserves the true reason.
  const onCancel = () =>
    Date.now() >= at - DEADLINE_SLACK_MS
      ? expired()
      : controller.abort(new DuelError(Code.CANCELLED, 'the client cancelled the call'));
  call.on('cancelled', onCancel);
  const timer = Number.isFinite(at) ? setTimeout(expired, Math.max(0, at - Date.now())) : undefined;
  return {
    ctx: {
      signal: controller.signal,
      metadata: call.metadata,
      peer: call.getPeer(),
      clientCertificate: call.getAuthContext()?.sslPeerCertificate,
      method,
      log: log.child(callFields(call.metadata, method)),
      draining,
    },
    done: () => {
      if (timer) clearTimeout(timer);
      call.removeListener('cancelled', onCancel);
    },
  };
}

function logFailure(log: Logger, error: DuelError): void {
  const fields = { code: codeName(error.code), err: error.message };
  if (error.code === Code.INTERNAL || error.code === Code.UNKNOWN)
    log.error({ ...fields, cause: error.cause }, 'rpc failed');
  else log.debug(fields, 'rpc rejected');
}

async function* decodedStream<T>(call: AsyncIterable<unknown>, method: string): AsyncIterable<T> {
  for await (const message of call) yield checkDecoded(message as T, method);
}

/** Wraps typed handlers into grpc-js's untyped implementation for `addService`. */
export function adaptHandlers(
  definition: grpc.ServiceDefinition,
  handlers: Record<string, (...args: never[]) => unknown>,
  log: Logger,
  observe?: (method: string, code: string, seconds: number) => void,
  draining: AbortSignal = new AbortController().signal,
  authorize?: (peer: PeerCertificate | undefined) => void,
): grpc.UntypedServiceImplementation {
  const impl: grpc.UntypedServiceImplementation = {};
  for (const [name, method] of Object.entries(definition as Record<string, MethodDef>)) {
    const bare = handlers[name] as unknown as (req: unknown, ctx: CallContext) => unknown;
    if (!bare) throw new Error(`no handler for ${method.path}`);
    // The authorization check runs where each call shape already turns a throw into a status.
    const handler = authorize
      ? (req: unknown, ctx: CallContext) => {
          authorize(ctx.clientCertificate);
          return bare(req, ctx);
        }
      : bare;
    const path = method.path;
    // Per call: a stopwatch that reports the call's code and duration once it ends, to the
    // metrics and as one access-log line with the call's run and round.
    // The call also runs in a SERVER span continuing the caller's trace (tracing.ts), which the
    // stopwatch ends with the call's code.
    const clock = (ctx: CallContext, span: EndSpan) => {
      const t0 = performance.now();
      return (code: Code, message?: string) => {
        const seconds = (performance.now() - t0) / 1000;
        observe?.(path, codeName(code), seconds);
        ctx.log.info({ code: codeName(code), ms: Math.round(seconds * 1000) }, 'rpc');
        span(code, message);
      };
    };
    const traced = (ctx: CallContext, body: (end: (code: Code, message?: string) => void) => void) =>
      inServerSpan(path, ctx.metadata, { 'client.address': ctx.peer }, (span) => body(clock(ctx, span)));
    const fail = (
      error: unknown,
      ctx: CallContext,
      end: (code: Code, message?: string) => void,
    ): Partial<grpc.StatusObject> => {
      const e = DuelError.from(error);
      logFailure(ctx.log, e);
      end(e.code, e.message);
      return toStatus(e);
    };

    // The two response shapes: one message through the callback, or a stream written with
    // back-pressure (a server stream also stops at cancellation between messages).
    const answer = (call: SurfaceCall, request: () => unknown, callback: grpc.sendUnaryData<unknown>) => {
      const { ctx, done } = contextOf(call, path, log, draining);
      traced(ctx, (end) => {
        Promise.resolve()
          .then(() => handler(request(), ctx))
          .then(
            (res) => {
              end(Code.OK);
              callback(null, res);
            },
            (err) => callback(fail(err, ctx, end)),
          )
          .finally(done);
      });
    };
    const stream = (
      call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>,
      request: () => unknown,
      stopOnAbort: boolean,
    ) => {
      const { ctx, done } = contextOf(call, path, log, draining);
      traced(ctx, (end) => {
        (async () => {
          for await (const res of handler(request(), ctx) as AsyncIterable<unknown>) {
            if (stopOnAbort && ctx.signal.aborted) throw ctx.signal.reason;
            if (!call.write(res)) await new Promise((resolve) => call.once('drain', resolve));
          }
          end(Code.OK);
          call.end();
        })()
          .catch((err) => call.emit('error', fail(err, ctx, end)))
          .finally(done);
      });
    };

    if (!method.requestStream && !method.responseStream)
      impl[name] = (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) =>
        answer(call, () => checkDecoded(call.request, path), callback);
    else if (!method.requestStream && method.responseStream)
      impl[name] = (call: grpc.ServerWritableStream<unknown, unknown>) =>
        stream(call, () => checkDecoded(call.request, path), true);
    else if (method.requestStream && !method.responseStream)
      impl[name] = (
        call: grpc.ServerReadableStream<unknown, unknown>,
        callback: grpc.sendUnaryData<unknown>,
      ) => answer(call, () => decodedStream(call, path), callback);
    else
      impl[name] = (call: grpc.ServerDuplexStream<unknown, unknown>) =>
        stream(call, () => decodedStream(call, path), false);
  }
  return impl;
}
