/**
 * Promise and async-iterable calls over generated grpc-js clients, for services that call other
 * services (the orchestrator). Each call has a deadline, follows an AbortSignal, carries the
 * caller's metadata, and fails with a DuelError that keeps the remote status code and message, so
 * retry decisions and error reports see what the callee said. Each call is a CLIENT span whose
 * trace context travels in its metadata (tracing.ts; no-ops while tracing is off).
 */
import * as grpc from '@grpc/grpc-js';
import { Code, DuelError } from '../../errors.js';
import { inClientSpan } from '../tracing.js';
import { codeOfStatus } from './status-details.js';

export interface CallOptions {
  deadlineMs: number;
  signal?: AbortSignal | undefined;
  metadata?: Record<string, string>;
}

function metadataOf(fields: Record<string, string> = {}): grpc.Metadata {
  const m = new grpc.Metadata();
  for (const [k, v] of Object.entries(fields)) m.set(k, v);
  return m;
}

const deadlineOf = (o: CallOptions) => new Date(Date.now() + o.deadlineMs);

/** `call` in a CLIENT span named `where`, given the metadata to send (the span's context in it). */
function traced<T>(
  client: grpc.Client,
  where: string,
  o: CallOptions,
  call: (metadata: grpc.Metadata) => Promise<T>,
): Promise<T> {
  return inClientSpan(
    where,
    client.getChannel().getTarget(),
    metadataOf(o.metadata),
    async (metadata, end) => {
      try {
        const res = await call(metadata);
        end(Code.OK);
        return res;
      } catch (e) {
        const err = DuelError.from(e);
        end(err.code, err.message);
        throw e;
      }
    },
  );
}

/** The callee's status as a DuelError ("<peer>: <method>: <details>"). */
function remoteError(error: unknown, where: string): DuelError {
  const e = error as Partial<grpc.ServiceError>;
  if (typeof e?.code === 'number')
    return new DuelError(codeOfStatus(e.code), `${where}: ${e.details || e.message}`, { cause: error });
  return DuelError.from(error);
}

/** Whether trying the same work elsewhere (or later) may succeed. */
export function isTransient(error: DuelError): boolean {
  return (
    [
      Code.UNAVAILABLE,
      Code.DEADLINE_EXCEEDED,
      Code.RESOURCE_EXHAUSTED,
      Code.ABORTED,
      Code.CANCELLED,
    ] as Code[]
  ).includes(error.code);
}

function linkAbort(signal: AbortSignal | undefined, call: { cancel(): void }): () => void {
  if (!signal) return () => {};
  const onAbort = () => call.cancel();
  if (signal.aborted) call.cancel();
  signal.addEventListener('abort', onAbort, { once: true });
  return () => signal.removeEventListener('abort', onAbort);
}

type UnaryMethod<Req, Res> = (
  req: Req,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
  cb: (err: grpc.ServiceError | null, res: Res) => void,
) => grpc.ClientUnaryCall;

export function callUnary<Req, Res>(
  client: grpc.Client,
  method: UnaryMethod<Req, Res>,
  req: Req,
  o: CallOptions,
  where: string,
): Promise<Res> {
  return traced(
    client,
    where,
    o,
    (metadata) =>
      new Promise((resolve, reject) => {
        const call = method.call(client, req, metadata, { deadline: deadlineOf(o) }, (err, res) => {
          unlink();
          if (err) reject(remoteError(err, where));
          else resolve(res);
        });
        const unlink = linkAbort(o.signal, call);
      }),
  );
}

type ServerStreamMethod<Req, Res> = (
  req: Req,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
) => grpc.ClientReadableStream<Res>;

/** Every message of a server stream, once it ended without error. */
export function callServerStream<Req, Res>(
  client: grpc.Client,
  method: ServerStreamMethod<Req, Res>,
  req: Req,
  o: CallOptions,
  where: string,
): Promise<Res[]> {
  return traced(
    client,
    where,
    o,
    (metadata) =>
      new Promise((resolve, reject) => {
        const call = method.call(client, req, metadata, { deadline: deadlineOf(o) });
        const unlink = linkAbort(o.signal, call);
        const out: Res[] = [];
        call.on('data', (m: Res) => out.push(m));
        call.on('error', (err) => {
          unlink();
          reject(remoteError(err, where));
        });
        call.on('end', () => {
          unlink();
          resolve(out);
        });
      }),
  );
}

type ClientStreamMethod<Req, Res> = (
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
  cb: (err: grpc.ServiceError | null, res: Res) => void,
) => grpc.ClientWritableStream<Req>;

/** Writes `requests` (respecting back-pressure), then awaits the single response. */
export function callClientStream<Req, Res>(
  client: grpc.Client,
  method: ClientStreamMethod<Req, Res>,
  requests: Iterable<Req>,
  o: CallOptions,
  where: string,
): Promise<Res> {
  return traced(
    client,
    where,
    o,
    (metadata) =>
      new Promise((resolve, reject) => {
        let settled = false;
        const call = method.call(client, metadata, { deadline: deadlineOf(o) }, (err, res) => {
          settled = true;
          unlink();
          if (err) reject(remoteError(err, where));
          else resolve(res);
        });
        const unlink = linkAbort(o.signal, call);
        void (async () => {
          for (const r of requests) {
            if (settled) return;
            if (!call.write(r)) await new Promise((ok) => call.once('drain', ok));
          }
          call.end();
        })();
      }),
  );
}
