/**
 * Runs by message: the orchestrator's durable consumer on the control stream. A pipeline publishes
 * a CloudEvent (src/platform/cloudevents.ts) on `<prefix>.run.submit` to start a run, or on
 * `<prefix>.run.<run_id>.cancel` to stop one; every replica pulls from the one shared consumer.
 *
 * The semantics are CreateRun's and CancelRun's. The run id is the event's id, and whether a
 * submit makes a run is decided by the run record (Orchestrator.create), never by JetStream's
 * duplicate window: a submit repeated a month later, or redelivered after this process was killed
 * between writing the record and acking, finds its run and creates nothing. A message is acked
 * only once its answer is decided and the record written, and is always answered by an event on
 * the run's subjects (`accepted`, `rejected`, or the cancel's outcome), also sent to the event's
 * `replyto` extension attribute when it has one: a request's own reply subject cannot carry it,
 * because JetStream answers it with the stream's publish acknowledgement.
 */
import {
  AckPolicy,
  DeliverPolicy,
  type JetStreamClient,
  type JsMsg,
  nanos,
  RetentionPolicy,
  StorageType,
} from 'nats';
import { parse as parseYaml } from 'yaml';
import { Code, DuelError } from '../../src/errors.js';
import { EventKind, RunEvent } from '../../src/gen/duel/v1/events.js';
import { type Run, RunState } from '../../src/gen/duel/v1/runs.js';
import {
  cloudEventHeaders,
  headerRecord,
  type ReceivedEvent,
  receiveCloudEvent,
} from '../../src/platform/cloudevents.js';
import { crashPoint } from '../../src/platform/crash-point.js';
import type { Logger } from '../../src/platform/logger.js';
import { ensureStream, type NatsConnection, replicasOf, toNatsHeaders } from '../../src/platform/nats.js';
import { eventName, eventType, stateName } from '../../src/platform/run-events.js';
import { parseRunSpec } from '../../src/platform/run-spec.js';
import { inMessageSpan } from '../../src/platform/tracing.js';
import type { Orchestrator } from './driver.js';
import { checkRunId, isRunId } from './spec.js';

export const SUBMIT_TYPE = 'dev.duel.run.submit';
export const CANCEL_TYPE = 'dev.duel.run.cancel';

export interface ControlSettings {
  /** The control stream (WorkQueue retention, file storage). @default 'DUEL_CTL' */
  stream: string;
  /** Subjects: `<prefix>.run.submit`, `<prefix>.run.<run_id>.cancel`. @default 'duel.ctl' */
  prefix: string;
  /** The durable consumer every orchestrator replica pulls from. @default 'duel-orchestrator' */
  consumer: string;
  /** How long a message may stay unacked before another replica gets it. */
  ackWaitMs: number;
  /** Deliveries of a message that fails for a passing reason (NATS, the artifact store) before it is rejected. */
  maxDeliver: number;
  /** Directory that relative paths in a submitted spec are read from. */
  specRoot: string;
  /** This orchestrator's id, the `source` of the answers it sends to `replyto`. */
  source: string;
}

/**
 * Where answers may go: inboxes only. The orchestrator publishes with its own, wider permissions,
 * so a `replyto` naming any subject would let a pipeline forge run events through it.
 */
const INBOX = /^_INBOX\.[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;

/** Codes that say the message itself is wrong: answered `rejected` at once, never redelivered. */
const REFUSALS = new Set<number>([
  Code.INVALID_ARGUMENT,
  Code.NOT_FOUND,
  Code.FAILED_PRECONDITION,
  Code.ALREADY_EXISTS,
  Code.OUT_OF_RANGE,
]);

const TERMINAL_KIND: Partial<Record<RunState, EventKind>> = {
  [RunState.RUN_STATE_SUCCEEDED]: EventKind.EVENT_KIND_RUN_FINISHED,
  [RunState.RUN_STATE_FAILED]: EventKind.EVENT_KIND_RUN_FAILED,
  [RunState.RUN_STATE_CANCELLED]: EventKind.EVENT_KIND_RUN_CANCELLED,
};

/** The spec in a submit's data: a JSON object already, or JSON/YAML text, as `duel run --spec` reads it. */
function specOf(e: ReceivedEvent): unknown {
  const data = e.event.data;
  const type = (e.event.datacontenttype ?? 'application/json').split(';')[0]!.trim();
  if (!/^(application|text)\/(json|yaml|x-yaml)$/.test(type))
    throw DuelError.invalidArgument([
      {
        field: e.field('datacontenttype'),
        description: `must be application/json or application/yaml, got '${type}'`,
      },
    ]);
  if (data === undefined || data === null || data === '')
    throw DuelError.invalidArgument([{ field: 'data', description: 'is required: the run spec' }]);
  if (typeof data === 'object' && !(data instanceof Uint8Array)) return data;
  const text = typeof data === 'string' ? data : new TextDecoder().decode(data as Uint8Array);
  try {
    return parseYaml(text);
  } catch (err) {
    throw DuelError.invalidArgument([
      { field: 'data', description: `not valid ${type}: ${(err as Error).message}` },
    ]);
  }
}

export class ControlConsumer {
  private stopped = false;
  private loop: Promise<void> | undefined;
  private stopFetch: (() => void) | undefined;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly settings: ControlSettings,
    private readonly orchestrator: Orchestrator,
    private readonly log: Logger,
  ) {}

  /** Creates (or updates) the control stream and the shared consumer. */
  static async open(
    nc: NatsConnection,
    settings: ControlSettings,
    orchestrator: Orchestrator,
    log: Logger,
  ): Promise<ControlConsumer> {
    const jsm = await nc.jetstreamManager();
    await ensureStream(jsm, {
      name: settings.stream,
      subjects: [`${settings.prefix}.>`],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      num_replicas: replicasOf(nc),
    });
    const consumer = {
      durable_name: settings.consumer,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(settings.ackWaitMs),
      max_deliver: settings.maxDeliver + 1,
    };
    try {
      await jsm.consumers.info(settings.stream, settings.consumer);
      await jsm.consumers.update(settings.stream, settings.consumer, consumer);
    } catch (e) {
      if ((e as { code?: string }).code !== '404') throw e;
      await jsm.consumers.add(settings.stream, consumer);
    }
    return new ControlConsumer(nc, nc.jetstream(), settings, orchestrator, log);
  }

  start(): void {
    this.loop = this.pull();
  }

  /** Stops pulling; a message in hand is finished (and acked) first. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.stopFetch?.();
    await this.loop;
  }

  private async pull(): Promise<void> {
    while (!this.stopped) {
      try {
        const batch = this.js.fetch(this.settings.stream, this.settings.consumer, {
          batch: 1,
          expires: 2000,
        });
        this.stopFetch = () => batch.stop();
        for await (const m of batch) await this.handle(m);
      } catch (e) {
        if (this.stopped) break;
        this.log.warn({ err: (e as Error).message }, 'control consumer: fetch failed; retrying');
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  /** Answers one control message, then acks it; a passing failure is handed back for a retry. */
  /** One control message, in a span continuing the sender's trace (its `traceparent`). */
  handle(m: JsMsg): Promise<void> {
    const h = headerRecord(m.headers);
    return inMessageSpan(
      `control ${m.subject}`,
      h,
      { 'messaging.system': 'nats', 'messaging.destination.name': m.subject },
      () => this.handleIn(m, h),
    );
  }

  private async handleIn(m: JsMsg, h: Record<string, string>): Promise<void> {
    const id = `${m.info.stream}-${m.seq}`;
    // What a binary-mode message says of itself even when its body cannot be read, so that the
    // refusal still reaches its sender and names its run.
    let to = { replyto: h['ce-replyto'] ?? '', id: h['ce-id'] ?? '' };
    // A cancel names its run in the subject; a submit's run is the event's id.
    const cancelled = this.cancelTarget(m.subject);
    let runId = cancelled ?? to.id;
    try {
      const received = receiveCloudEvent(m.headers, m.data);
      runId = cancelled ?? received.event.id;
      to = { replyto: String(received.event.replyto ?? ''), id: received.event.id };
      if (to.replyto !== '' && !INBOX.test(to.replyto))
        throw DuelError.invalidArgument([
          {
            field: received.field('replyto'),
            description: `must be an _INBOX. subject, got '${to.replyto}'`,
          },
        ]);
      const answer = await this.act(m.subject, received);
      // A cancel's event (`cancelled`) is the orchestrator's own, published by Orchestrator.cancel.
      if (answer.publish) await this.orchestrator.events.emit(answer.event);
      await this.reply(answer.event, to);
      crashPoint('control.before-ack');
      m.ack();
    } catch (err) {
      const e = DuelError.from(err);
      const last = m.info.redeliveryCount >= this.settings.maxDeliver;
      if (!REFUSALS.has(e.code) && !last) {
        this.log.warn(
          { subject: m.subject, run: runId, err: e.message },
          'control message failed; it will be redelivered',
        );
        m.nak(1000 * 2 ** Math.min(m.info.redeliveryCount, 5));
        return;
      }
      const rejected: RunEvent = {
        ...answerOf(isRunId(runId) ? runId : '', EventKind.EVENT_KIND_RUN_REJECTED),
        message: e.message,
        badRequest: {
          fieldViolations: e.violations.length
            ? [...e.violations]
            : [{ field: m.subject, description: e.message }],
        },
      };
      this.log.info({ subject: m.subject, run: runId, err: e.message }, 'control message rejected');
      await this.orchestrator.events.answer(rejected, id);
      await this.reply(rejected, to);
      m.ack();
    }
  }

  private async act(subject: string, e: ReceivedEvent): Promise<{ event: RunEvent; publish: boolean }> {
    const p = this.settings.prefix;
    const type = e.event.type;
    if (subject === `${p}.run.submit`) {
      if (type !== SUBMIT_TYPE)
        throw DuelError.invalidArgument([
          { field: e.field('type'), description: `must be ${SUBMIT_TYPE} on ${subject}, got '${type}'` },
        ]);
      checkRunId(e.event.id, e.field('id'));
      const spec = parseRunSpec(specOf(e), this.settings.specRoot, 'data');
      const { run, created } = await this.orchestrator.create(spec, e.event.id);
      return {
        event: {
          ...answerOf(run.runId, EventKind.EVENT_KIND_RUN_ACCEPTED),
          message: created ? 'run created' : `run exists (${stateName(run.state)}): nothing created`,
        },
        publish: true,
      };
    }
    const runId = this.cancelTarget(subject);
    if (runId !== undefined) {
      if (type !== CANCEL_TYPE)
        throw DuelError.invalidArgument([
          { field: e.field('type'), description: `must be ${CANCEL_TYPE} on ${subject}, got '${type}'` },
        ]);
      checkRunId(runId, 'subject');
      const data = e.event.data as { reason?: unknown } | undefined;
      const reason = typeof data?.reason === 'string' ? data.reason : 'cancelled by message';
      const run = await this.orchestrator.cancel(runId, reason);
      return { event: stateAnswer(run), publish: false };
    }
    throw DuelError.invalidArgument([
      {
        field: 'subject',
        description: `'${subject}' is neither ${p}.run.submit nor ${p}.run.<run_id>.cancel`,
      },
    ]);
  }

  /** The run a `<prefix>.run.<run_id>.cancel` subject names; undefined for any other subject. */
  private cancelTarget(subject: string): string | undefined {
    const p = `${this.settings.prefix}.run.`;
    if (!subject.startsWith(p) || !subject.endsWith('.cancel')) return undefined;
    const token = subject.slice(p.length, -'.cancel'.length);
    return token.includes('.') ? undefined : token;
  }

  /** Sends `event` to the message's `replyto`, when it named one. */
  private async reply(event: RunEvent, to: { replyto: string; id: string }): Promise<void> {
    if (!INBOX.test(to.replyto)) return;
    this.nc.publish(to.replyto, RunEvent.encode(event).finish(), {
      headers: toNatsHeaders(
        cloudEventHeaders({
          id: `${to.id}/${eventName(event.kind)}`,
          source: this.settings.source,
          type: eventType(event.kind),
          subject: event.runId,
          contentType: 'application/protobuf',
        }),
      ),
    });
  }
}

function answerOf(runId: string, kind: EventKind): RunEvent {
  const now = new Date();
  return {
    runId,
    kind,
    round: 0,
    time: now,
    stageStartedAt: now,
    checkpoint: undefined,
    metrics: undefined,
    message: '',
    badRequest: undefined,
    policyVersion: 0,
  };
}

/** A cancel's answer: the run's state after it, as the event that ended it (or `cancelled`). */
function stateAnswer(run: Run): RunEvent {
  const kind = TERMINAL_KIND[run.state] ?? EventKind.EVENT_KIND_RUN_CANCELLED;
  return {
    ...answerOf(run.runId, kind),
    checkpoint: run.latestCheckpoint,
    message:
      run.state === RunState.RUN_STATE_CANCELLED
        ? run.message
        : `run already ${stateName(run.state)}: not cancelled`,
  };
}
