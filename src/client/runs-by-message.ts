/**
 * Submitting a run by message, as a pipeline does (services/orchestrator/control.ts): the spec as a
 * binary-mode CloudEvent on `duel.ctl.run.submit`, the answer (`accepted` or `rejected`) on a reply
 * inbox named by the event's `replyto` attribute, then the run's events from its JetStream subjects
 * until it ends. What `duel run --nats URL` does.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createInbox } from 'nats';
import { parse as parseYaml } from 'yaml';
import { DuelError } from '../errors.js';
import type { ArtifactRef, ModelRef } from '../gen/duel/v1/common.js';
import { EventKind, RunEvent } from '../gen/duel/v1/events.js';
import { cloudEventHeaders } from '../platform/cloudevents.js';
import { connectNats, followSubject, type NatsSettings, toNatsHeaders } from '../platform/nats.js';
import { eventName, isTerminal } from '../platform/run-events.js';
import { readRunSpec } from '../platform/run-spec.js';
import { traceHeaders } from '../platform/tracing.js';
import { describeEvent } from './runs.js';

export interface MessageSubmitOptions {
  /** The run id (the event's id); default: the spec's name and a random suffix. */
  id?: string | undefined;
  /** Subject prefix of the control stream. @default 'duel.ctl' */
  prefix?: string;
  /** Return once the run is accepted. */
  detach?: boolean | undefined;
  /** How long to wait for an orchestrator to answer (one may be scaling from zero). @default 600000 */
  answerWithinMs?: number;
  log?: (line: string) => void;
}

const ref = (a: ArtifactRef | undefined) => ({ uri: a!.uri, sha256: a!.sha256 });

/**
 * The spec file's own keys, with every model directory replaced by its `{uri, sha256}` reference
 * and prompt paths made absolute: what the orchestrator reads is then what this machine checked,
 * wherever the orchestrator's working directory is.
 */
export function portableSpec(file: string): { raw: Record<string, unknown>; name: string; rounds: number } {
  const spec = readRunSpec(file);
  const raw = parseYaml(readFileSync(file, 'utf8')) as Record<string, unknown>;
  const models: [string, ModelRef | undefined][] = [
    ['policy', spec.policy],
    ['reference', spec.reference],
    ['judge', spec.judge],
  ];
  for (const [key, m] of models) if (raw[key] !== undefined) raw[key] = ref(m!.artifact);
  raw.prompts = spec.promptsUri;
  if (spec.evalPromptsUri) raw.eval_prompts = spec.evalPromptsUri;
  return { raw, name: spec.name, rounds: spec.rounds };
}

/** Submits the spec in `file` by message and follows the run; resolves to its last event. */
export async function submitRunByMessage(
  nats: NatsSettings,
  file: string,
  o: MessageSubmitOptions = {},
): Promise<RunEvent> {
  const { raw, name, rounds } = portableSpec(file);
  const id =
    o.id ??
    `${(name || 'run')
      .toLowerCase()
      .replace(/[^a-z0-9-]+/g, '-')
      .slice(0, 40)}-${randomBytes(4).toString('hex')}`;
  const log = o.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const nc = await connectNats(nats, 'duel-run');
  try {
    const inbox = createInbox();
    const answers = nc.subscribe(inbox, { max: 1 });
    const headers = toNatsHeaders({
      ...cloudEventHeaders({
        id,
        source: '/duel/cli',
        type: 'dev.duel.run.submit',
        contentType: 'application/json',
      }),
      'ce-replyto': inbox,
      // The caller's trace, which the run joins (the CloudEvents distributed-tracing extension).
      ...traceHeaders(),
    });
    // Subscribed before the submit, so no event of the run can slip past.
    const events = await followSubject(nc.jetstream(), `duel.run.${id}.>`, true);
    const ack = await nc
      .jetstream()
      .publish(`${o.prefix ?? 'duel.ctl'}.run.submit`, new TextEncoder().encode(JSON.stringify(raw)), {
        headers,
      });
    log(
      `run ${id}: submitted (control stream ${ack.stream}, message ${ack.seq}); waiting for an orchestrator`,
    );
    const within = o.answerWithinMs ?? 600_000;
    const timer = setTimeout(() => answers.unsubscribe(), within);
    let answer: RunEvent | undefined;
    for await (const m of answers) answer = RunEvent.decode(m.data);
    clearTimeout(timer);
    if (!answer)
      throw DuelError.unavailable(
        `no orchestrator answered run ${id} in ${within / 1000} s (the message stays queued on the control stream)`,
      );
    if (answer.kind === EventKind.EVENT_KIND_RUN_REJECTED) {
      events.unsubscribe();
      throw DuelError.invalidArgument(
        answer.badRequest?.fieldViolations.map((v) => ({ field: v.field, description: v.description })) ?? [
          { field: 'spec', description: answer.message },
        ],
      );
    }
    log(`run ${id}: accepted (${answer.message})`);
    if (o.detach) {
      events.unsubscribe();
      return answer;
    }
    const t0 = Date.now();
    let last = answer;
    for await (const m of events) {
      const e = RunEvent.decode(m.data);
      // A submit refused earlier under this id may precede the run on its subjects.
      if (e.kind === EventKind.EVENT_KIND_RUN_REJECTED || e.kind === EventKind.EVENT_KIND_RUN_ACCEPTED)
        continue;
      log(describeEvent(e, rounds, t0));
      last = e;
      if (isTerminal(e.kind)) break;
    }
    events.unsubscribe();
    return last;
  } finally {
    await nc.close();
  }
}

/** The one line `duel run --nats` prints at the end. */
export const eventSummary = (e: RunEvent) => ({
  run_id: e.runId,
  state: eventName(e.kind),
  message: e.message || undefined,
  latest_checkpoint: e.checkpoint?.artifact,
});
