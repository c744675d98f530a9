/**
 * CloudEvents 1.0 over NATS (the CloudEvents NATS protocol binding): a NATS message → CloudEvent,
 * in binary mode (one `ce-<attribute>` header per attribute, the data's `content-type`, the data as
 * the body) and structured mode (`content-type: application/cloudevents+json`, the whole event as
 * JSON in the body); and the headers that make an event we publish a binary-mode CloudEvent.
 *
 * The CloudEvents SDK (`cloudevents`) validates the attributes and parses both modes, but ships
 * bindings for HTTP, Kafka and MQTT only. NATS's binary mode maps attributes to `ce-` headers
 * exactly as HTTP's does, so its HTTP deserializer reads a NATS message once the headers are a
 * plain record. What the SDK does not do is refuse a missing required attribute: it fills a
 * missing `id` with a random UUID and a missing `specversion` with 1.0, which would make a retried
 * submit a second run. So presence is checked here, before the SDK sees the message.
 */
import { type CloudEventV1, HTTP, ValidationError } from 'cloudevents';
import type { MsgHdrs } from 'nats';
import { DuelError, type FieldViolation } from '../errors.js';

export const STRUCTURED_JSON = 'application/cloudevents+json';
const REQUIRED = ['specversion', 'id', 'source', 'type'] as const;

export type Mode = 'binary' | 'structured';

/** An event as received: its attributes, its data, and how a field of it is named in answers. */
export interface ReceivedEvent {
  mode: Mode;
  event: CloudEventV1<unknown>;
  /** `ce-id` in binary mode, `id` in structured mode: how answers name an attribute. */
  field(attribute: string): string;
}

/** Lower-cased header names to their first value. */
export function headerRecord(h: MsgHdrs | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of h?.keys() ?? []) {
    const key = k.toLowerCase();
    out[key] ??= h!.get(k);
  }
  return out;
}

const violationsOf = (e: ValidationError, field: (a: string) => string): FieldViolation[] => {
  const list = (e.errors ?? []).map((x) => {
    if (typeof x === 'string') return { field: '(event)', description: x };
    const attr = x.instancePath.replace(/^\//, '') || String(x.params?.missingProperty ?? '(event)');
    return { field: field(attr), description: x.message ?? 'is invalid' };
  });
  return list.length ? list : [{ field: '(event)', description: e.message }];
};

/**
 * Reads a CloudEvent from a NATS message; INVALID_ARGUMENT naming each bad header or attribute
 * when it is not one (a required attribute missing, malformed JSON, an attribute of the wrong form).
 */
export function receiveCloudEvent(headers: MsgHdrs | undefined, body: Uint8Array): ReceivedEvent {
  const h = headerRecord(headers);
  const text = new TextDecoder().decode(body);
  const structured = (h['content-type'] ?? '').startsWith(STRUCTURED_JSON);
  const mode: Mode = structured ? 'structured' : 'binary';
  const field = structured
    ? (a: string) => a
    : (a: string) => (a === 'datacontenttype' ? 'content-type' : `ce-${a}`);
  let payload: Record<string, unknown> | string = text;
  if (structured) {
    try {
      payload = JSON.parse(text) as Record<string, unknown>;
    } catch (e) {
      throw DuelError.invalidArgument([
        { field: '(body)', description: `not a JSON CloudEvent: ${(e as Error).message}` },
      ]);
    }
    if (payload === null || typeof payload !== 'object' || Array.isArray(payload))
      throw DuelError.invalidArgument([
        { field: '(body)', description: 'a structured CloudEvent is a JSON object' },
      ]);
  }
  const present = (a: string) =>
    structured ? (payload as Record<string, unknown>)[a] !== undefined : h[`ce-${a}`] !== undefined;
  const missing = REQUIRED.filter((a) => !present(a));
  if (missing.length)
    throw DuelError.invalidArgument(missing.map((a) => ({ field: field(a), description: 'is required' })));
  try {
    const event = HTTP.toEvent({ headers: h, body: payload }) as CloudEventV1<unknown>;
    (event as unknown as { validate(): boolean }).validate();
    return { mode, event, field };
  } catch (e) {
    if (e instanceof ValidationError) throw DuelError.invalidArgument(violationsOf(e, field));
    // The SDK parses a JSON body itself (binary mode, content-type application/json).
    if (e instanceof SyntaxError)
      throw DuelError.invalidArgument([{ field: '(body)', description: `not valid JSON: ${e.message}` }]);
    throw e;
  }
}

/** The headers that make a message a binary-mode CloudEvent. */
export function cloudEventHeaders(attributes: {
  id: string;
  source: string;
  type: string;
  subject?: string;
  time?: Date;
  contentType: string;
}): Record<string, string> {
  return {
    'ce-specversion': '1.0',
    'ce-id': attributes.id,
    'ce-source': attributes.source,
    'ce-type': attributes.type,
    ...(attributes.subject ? { 'ce-subject': attributes.subject } : {}),
    'ce-time': (attributes.time ?? new Date()).toISOString(),
    'content-type': attributes.contentType,
  };
}
