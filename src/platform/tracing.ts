/**
 * Distributed traces with OpenTelemetry: W3C trace context (`traceparent`, `tracestate`) in gRPC
 * metadata, a SERVER span around every call a service handles and a CLIENT span around every call
 * it makes, exported over OTLP/HTTP. The code uses only @opentelemetry/api, whose calls are no-ops
 * until `startTracing` registers the SDK: with no endpoint configured (the default) no SDK loads
 * and a call pays for a few no-op function calls.
 */

import type * as grpc from '@grpc/grpc-js';
import {
  type Attributes,
  type Context,
  context,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type TextMapSetter,
  trace,
} from '@opentelemetry/api';

const TRACER = 'duel';
const tracer = () => trace.getTracer(TRACER);

/** Where traces go: `telemetry.otlp.endpoint`, else OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT; '' is off. */
export function otlpEndpoint(configured = ''): string {
  return (
    configured ||
    process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ||
    (process.env.OTEL_EXPORTER_OTLP_ENDPOINT
      ? `${process.env.OTEL_EXPORTER_OTLP_ENDPOINT.replace(/\/$/, '')}/v1/traces`
      : '')
  );
}

export interface Tracing {
  /** Exports what is buffered and stops; spans ended before it are never lost. */
  shutdown(): Promise<void>;
}

/**
 * Registers the SDK for this process when an endpoint is configured: spans batched to
 * `endpoint` (OTLP/HTTP, JSON), named by `service.name` = `service`. Returns undefined (and loads
 * nothing) when tracing is off.
 */
export async function startTracing(service: string, endpoint: string): Promise<Tracing | undefined> {
  if (!endpoint) return undefined;
  const [
    { TracerProvider, BatchSpanProcessor },
    { OTLPTraceExporter },
    { resourceFromAttributes },
    { AsyncLocalStorageContextManager },
    { W3CTraceContextPropagator },
  ] = await Promise.all([
    import('@opentelemetry/sdk-trace'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/resources'),
    import('@opentelemetry/context-async-hooks'),
    import('@opentelemetry/core'),
  ]);
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ 'service.name': service, 'service.instance.id': `${process.pid}` }),
    spanProcessors: [
      new BatchSpanProcessor({
        exporter: new OTLPTraceExporter({ url: endpoint }),
        // The standard variable; the SDK's default (5 s) otherwise.
        ...(Number(process.env.OTEL_BSP_SCHEDULE_DELAY) > 0
          ? { scheduledDelayMillis: Number(process.env.OTEL_BSP_SCHEDULE_DELAY) }
          : {}),
      }),
    ],
  });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  return { shutdown: () => provider.shutdown() };
}

const metadataGetter: TextMapGetter<grpc.Metadata> = {
  keys: (m) => Object.keys(m.getMap()),
  get: (m, key) => {
    const v = m.get(key);
    return v.length === 0 ? undefined : v.map(String);
  },
};
const metadataSetter: TextMapSetter<grpc.Metadata> = { set: (m, key, value) => m.set(key, value) };

/** Writes the active trace context into outgoing metadata. */
export function injectInto(metadata: grpc.Metadata, ctx: Context = context.active()): grpc.Metadata {
  propagation.inject(ctx, metadata, metadataSetter);
  return metadata;
}

/** How a span ends: the call's gRPC status code (0 is OK) and, on failure, its message. */
export type EndSpan = (code: number, message?: string) => void;

function ender(span: Span): EndSpan {
  return (code, message) => {
    span.setAttribute('rpc.grpc.status_code', code);
    if (code !== 0) span.setStatus({ code: SpanStatusCode.ERROR, ...(message ? { message } : {}) });
    span.end();
  };
}

/**
 * Runs `body` in a SERVER span of the call `method`, continuing the trace the caller sent in
 * `metadata`; everything `body` starts (its own calls, its log lines) is inside the span.
 */
export function inServerSpan<T>(
  method: string,
  metadata: grpc.Metadata,
  attributes: Attributes,
  body: (end: EndSpan) => T,
): T {
  const parent = propagation.extract(ROOT_CONTEXT, metadata, metadataGetter);
  const span = tracer().startSpan(
    method,
    { kind: SpanKind.SERVER, attributes: { 'rpc.system': 'grpc', 'rpc.method': method, ...attributes } },
    parent,
  );
  return context.with(trace.setSpan(parent, span), () => body(ender(span)));
}

/**
 * Runs `body` in a CLIENT span of a call to `method` at `address`, with the metadata the call must
 * send (the span's trace context injected).
 */
export function inClientSpan<T>(
  method: string,
  address: string,
  metadata: grpc.Metadata,
  body: (metadata: grpc.Metadata, end: EndSpan) => T,
): T {
  const span = tracer().startSpan(method, {
    kind: SpanKind.CLIENT,
    attributes: { 'rpc.system': 'grpc', 'rpc.method': method, 'server.address': address },
  });
  const ctx = trace.setSpan(context.active(), span);
  return context.with(ctx, () => body(injectInto(metadata, ctx), ender(span)));
}

/** A span of the process's own work (a run, a round, a stage), inside the active one. */
export function inSpan<T>(
  name: string,
  attributes: Attributes,
  body: (span: Span) => Promise<T>,
): Promise<T> {
  return tracer().startActiveSpan(name, { attributes }, async (span) => {
    try {
      return await body(span);
    } catch (e) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: (e as Error).message });
      throw e;
    } finally {
      span.end();
    }
  });
}

/** The active span's ids, for a log line: none when tracing is off or no span is active. */
export function traceFields(): { trace_id: string; span_id: string } | Record<string, never> {
  const s = trace.getActiveSpan()?.spanContext();
  return s && trace.isSpanContextValid(s) ? { trace_id: s.traceId, span_id: s.spanId } : {};
}

const recordSetter: TextMapSetter<Record<string, string>> = { set: (r, key, value) => (r[key] = value) };
const recordGetter: TextMapGetter<Record<string, string>> = {
  keys: (r) => Object.keys(r),
  // The CloudEvents distributed-tracing extension's attribute, where a binary-mode event has it.
  get: (r, key) => r[key] ?? r[`ce-${key}`],
};

/**
 * The active trace context as message headers: W3C `traceparent`/`tracestate`, and the same as
 * the CloudEvents distributed-tracing extension's attributes (`ce-traceparent`, `ce-tracestate`)
 * for a binary-mode event. Empty when tracing is off.
 */
export function traceHeaders(): Record<string, string> {
  return Object.fromEntries(
    Object.entries(traceContext()).flatMap(([k, v]) => [
      [k, v],
      [`ce-${k}`, v],
    ]),
  );
}

/** The active trace context as W3C fields only (`traceparent`, `tracestate`): what a record keeps. */
export function traceContext(): Record<string, string> {
  const w3c: Record<string, string> = {};
  propagation.inject(context.active(), w3c, recordSetter);
  return w3c;
}

/**
 * Runs `body` in the trace context `fields` hold (traceContext's, kept in a record), so work that
 * another process resumes stays in the trace that started it; as it is when they hold none.
 */
export function withinTraceContext<T>(fields: Record<string, string>, body: () => T): T {
  if (!fields.traceparent) return body();
  return context.with(propagation.extract(ROOT_CONTEXT, fields, recordGetter), body);
}

/** Runs `body` in a CONSUMER span of a message, continuing the trace its headers carry. */
export function inMessageSpan<T>(
  name: string,
  headers: Record<string, string>,
  attributes: Attributes,
  body: () => Promise<T>,
): Promise<T> {
  const parent = propagation.extract(ROOT_CONTEXT, headers, recordGetter);
  return context.with(parent, () =>
    tracer().startActiveSpan(name, { kind: SpanKind.CONSUMER, attributes }, async (span) => {
      try {
        return await body();
      } catch (e) {
        span.setStatus({ code: SpanStatusCode.ERROR, message: (e as Error).message });
        throw e;
      } finally {
        span.end();
      }
    }),
  );
}

/** An event on the active span (a training step), when there is one. */
export function spanEvent(name: string, attributes: Attributes): void {
  trace.getActiveSpan()?.addEvent(name, attributes);
}

/** Attributes on the active span (a session call's session id and seq), when there is one. */
export function spanAttributes(attributes: Attributes): void {
  trace.getActiveSpan()?.setAttributes(attributes);
}

/** A span open across several tasks: work runs inside it with `within`, and `end` closes it. */
export interface OpenSpan {
  within<T>(work: () => T): T;
  end(): void;
}

/**
 * A span that outlives the call that opens it (a round whose stages run in three loops when
 * rounds overlap), a child of the active span.
 */
export function openSpan(name: string, attributes: Attributes): OpenSpan {
  const span = tracer().startSpan(name, { attributes });
  const ctx = trace.setSpan(context.active(), span);
  return { within: (work) => context.with(ctx, work), end: () => span.end() };
}
