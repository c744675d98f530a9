/**
 * Runs by message through the real suite: a nats-server with the users docs/SECURITY.md sets up
 * (the services' own, a pipeline that may only publish `duel.ctl.>` and read `duel.run.>`, and
 * one without the right to submit), the four services as processes, and CloudEvents published the
 * way a pipeline publishes them. Submits in binary and structured mode, duplicates (also after a
 * restart and after a SIGKILL between the record and the ack), rejections, a cancel, the
 * permission refusal, and the `duel run --nats` command as built.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createInbox, type MsgHdrs, headers as natsHeaders } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '../../src/client/local-cluster.js';
import { portableSpec } from '../../src/client/runs-by-message.js';
import { EventKind, RunEvent } from '../../src/gen/duel/v1/events.js';
import { Run, RunState } from '../../src/gen/duel/v1/runs.js';
import { receiveCloudEvent } from '../../src/platform/cloudevents.js';
import { connectNats, followSubject, type NatsConnection } from '../../src/platform/nats.js';
import { NatsServer } from '../../src/platform/nats-server.js';
import { duelBin, packageRoot } from '../../src/platform/paths.js';
import { eventName } from '../../src/platform/run-events.js';
import { eventsUntilEnd } from '../helpers/run-events.js';
import { writeTinyRun, writeTinySpec } from '../helpers/tiny-run.js';
import { fileTempDir } from '../helpers/tmp.js';

const root = fileTempDir('duel-control-');
let nats: NatsServer;
let cluster: LocalCluster;
/** The services' user: everything. */
let admin: NatsConnection;
/** A pipeline's user, with docs/SECURITY.md's permissions. */
let pipeline: NatsConnection;

const PIPELINE = { user: 'pipeline', password: 'p1pe' };

beforeAll(async () => {
  writeTinyRun(root);
  const conf = join(root, 'nats.conf');
  // docs/SECURITY.md "Runs by message": the pipeline publishes control messages and reads run
  // events; its _INBOX is for JetStream's publish acknowledgement and the orchestrator's answers.
  writeFileSync(
    conf,
    `authorization {
  users = [
    { user: duel, password: "s3rv1ces" }
    { user: pipeline, password: "p1pe", permissions: {
        publish: { allow: ["duel.ctl.>"] }
        subscribe: { allow: ["duel.run.>", "_INBOX.>"] } } }
    { user: watcher, password: "w4tch", permissions: {
        publish: { allow: ["duel.ctl.run.*.cancel"] }
        subscribe: { allow: ["duel.run.>", "_INBOX.>"] } } }
  ]
}
`,
  );
  nats = await NatsServer.start({ configFile: conf, storeDir: join(root, 'nats') });
  cluster = await LocalCluster.start({
    natsUrl: nats.url,
    artifactsRoot: join(root, 'artifacts'),
    logDir: join(root, 'logs'),
    env: {
      DUEL_NATS_USER: 'duel',
      DUEL_NATS_PASSWORD: 's3rv1ces',
      // A message whose orchestrator died unacked comes back quickly; a dead driver's lease too.
      DUEL_ORCHESTRATOR_CONTROL_ACK_WAIT_MS: '2000',
      DUEL_ORCHESTRATOR_LEASE_MS: '3000',
    },
  });
  admin = await connectNats({ url: nats.url, user: 'duel', password: 's3rv1ces' }, 'control-test');
  pipeline = await connectNats({ url: nats.url, ...PIPELINE }, 'pipeline');
}, 120_000);

afterAll(async () => {
  await pipeline?.close();
  await admin?.close();
  await cluster?.stop();
  await nats?.stop();
});

const encode = (s: string) => new TextEncoder().encode(s);

/** A binary-mode CloudEvent's headers, with the answer's inbox as `replyto`. */
function binary(id: string | undefined, type: string, contentType: string, replyto: string): MsgHdrs {
  const h = natsHeaders();
  h.set('ce-specversion', '1.0');
  if (id !== undefined) h.set('ce-id', id);
  h.set('ce-source', '/tests/pipeline');
  h.set('ce-type', type);
  h.set('ce-replyto', replyto);
  h.set('content-type', contentType);
  return h;
}

/** Publishes a control message as the pipeline user and resolves to the orchestrator's answer. */
async function send(
  subject: string,
  message: (inbox: string) => { body: Uint8Array; headers: MsgHdrs },
): Promise<RunEvent> {
  const inbox = createInbox();
  const sub = pipeline.subscribe(inbox, { max: 1, timeout: 60_000 });
  const { body, headers } = message(inbox);
  await pipeline.jetstream().publish(subject, body, { headers });
  for await (const m of sub) return RunEvent.decode(m.data);
  throw new Error('no answer');
}

const submitBinary = (id: string | undefined, body: string, contentType = 'application/json') =>
  send('duel.ctl.run.submit', (inbox) => ({
    body: encode(body),
    headers: binary(id, 'dev.duel.run.submit', contentType, inbox),
  }));

/** Structured mode: the whole event, `replyto` included, in the body. */
const submitStructured = (event: Record<string, unknown>) =>
  send('duel.ctl.run.submit', (inbox) => {
    const headers = natsHeaders();
    headers.set('content-type', 'application/cloudevents+json');
    return { body: encode(JSON.stringify({ ...event, replyto: inbox })), headers };
  });

/** A spec as a pipeline sends it: the file's keys, paths absolute (or references). */
const specJson = (name: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify(portableSpec(writeTinySpec(root, name, extra)).raw);

/** Every event of run `id` as an independent consumer sees it, until the run ends. */
const eventsOf = (id: string) => eventsUntilEnd(admin, id);

async function runRecord(id: string): Promise<Run | undefined> {
  const e = await (await admin.jetstream().views.kv('duel_runs')).get(id);
  return e?.operation === 'PUT' ? Run.decode(e.value) : undefined;
}

async function runIds(): Promise<string[]> {
  const out: string[] = [];
  for await (const k of await (await admin.jetstream().views.kv('duel_runs')).keys()) out.push(k);
  return out.sort();
}

/** Nothing waits on the control consumer: every message was acked. */
async function controlDrained(): Promise<{ pending: number; unacked: number; stored: number }> {
  const jsm = await admin.jetstreamManager();
  for (let i = 0; ; i++) {
    const c = await jsm.consumers.info('DUEL_CTL', 'duel-orchestrator');
    const s = await jsm.streams.info('DUEL_CTL');
    const r = { pending: c.num_pending, unacked: c.num_ack_pending, stored: s.state.messages };
    if ((r.pending === 0 && r.unacked === 0 && r.stored === 0) || i > 50) return r;
    await new Promise((res) => setTimeout(res, 100));
  }
}

/** Each round's trained weights (the checkpoint's other files name the run and time the round). */
const checkpoints = async (id: string) =>
  (await runRecord(id))!.rounds.map((r) =>
    createHash('sha256')
      .update(readFileSync(join(fileURLToPath(r.checkpoint!.artifact!.uri), 'model.safetensors')))
      .digest('hex'),
  );

describe('runs by message', () => {
  it('starts a run from a binary-mode and a structured-mode CloudEvent: accepted, then finished', async () => {
    const binaryEvents = eventsOf('by-binary');
    const structuredEvents = eventsOf('by-structured');
    const [a, b] = await Promise.all([
      submitBinary('by-binary', specJson('by-binary')),
      submitStructured({
        specversion: '1.0',
        id: 'by-structured',
        source: '/tests/pipeline',
        type: 'dev.duel.run.submit',
        datacontenttype: 'application/json',
        data: JSON.parse(specJson('by-structured')),
      }),
    ]);
    expect([eventName(a.kind), a.runId, a.message]).toEqual(['accepted', 'by-binary', 'run created']);
    expect([eventName(b.kind), b.runId]).toEqual(['accepted', 'by-structured']);
    for (const [id, events] of [
      ['by-binary', await binaryEvents],
      ['by-structured', await structuredEvents],
    ] as const) {
      const subjects = events.map((e) => e.subject);
      expect(subjects[0]).toBe(`duel.run.${id}.created`);
      expect(subjects).toContain(`duel.run.${id}.accepted`);
      expect(subjects.at(-1)).toBe(`duel.run.${id}.finished`);
      expect((await runRecord(id))!.state).toBe(RunState.RUN_STATE_SUCCEEDED);
    }
    // Every run event is a binary-mode CloudEvent too, readable by the same binding.
    const trained = await (await admin.jetstreamManager()).streams.getMessage('DUEL_RUNS', {
      last_by_subj: 'duel.run.by-binary.round.1.trained',
    });
    const ce = receiveCloudEvent(trained.header, trained.data).event;
    expect([ce.type, ce.id, ce.subject, ce.datacontenttype]).toEqual([
      'dev.duel.run.round.trained',
      'by-binary/1/trained',
      'by-binary',
      'application/protobuf',
    ]);
    expect(RunEvent.decode(trained.data).policyVersion).toBe(1);
    // Both came from the same spec and seed: the same weights, whichever mode carried them.
    expect(await checkpoints('by-structured')).toEqual(await checkpoints('by-binary'));
    expect(await controlDrained()).toEqual({ pending: 0, unacked: 0, stored: 0 });
  }, 180_000);

  it('takes a YAML spec in binary mode', async () => {
    const yaml = Object.entries(JSON.parse(specJson('by-yaml', { rounds: 1 })))
      .map(([k, v]) => `${k}: ${JSON.stringify(v)}`)
      .join('\n');
    const events = eventsOf('by-yaml');
    const a = await submitBinary('by-yaml', yaml, 'application/yaml');
    expect(eventName(a.kind)).toBe('accepted');
    expect((await events).at(-1)!.subject).toBe('duel.run.by-yaml.finished');
  }, 120_000);

  it('creates nothing for a second submit of the same id, also after the orchestrator restarts', async () => {
    const before = await runIds();
    const again = await submitBinary('by-binary', specJson('by-binary'));
    expect([eventName(again.kind), again.message]).toEqual([
      'accepted',
      'run exists (succeeded): nothing created',
    ]);
    await cluster.orchestrator.stop();
    await cluster.orchestrator.start();
    // Far beyond any duplicate window would be the same: the run record decides, and a different
    // spec under the same id changes nothing either.
    const third = await submitBinary('by-binary', specJson('by-binary-changed', { rounds: 1 }));
    expect(third.message).toBe('run exists (succeeded): nothing created');
    expect(await runIds()).toEqual(before);
    expect((await runRecord('by-binary'))!.spec!.rounds).toBe(2);
    const created = (await admin.jetstreamManager()).streams.getMessage('DUEL_RUNS', {
      last_by_subj: 'duel.run.by-binary.created',
    });
    expect((await created).seq).toBeGreaterThan(0);
  }, 120_000);

  it('rejects malformed JSON, an unknown algorithm and a missing policy, naming the field, creating nothing', async () => {
    const before = await runIds();
    const watch = followSubject(admin.jetstream(), 'duel.run.*.rejected', false);
    const sub = await watch;
    const malformed = await submitBinary('bad-json', '{"algorithm": "sppo",');
    const unknown = await submitBinary('bad-algo', specJson('bad-algo', { algorithm: 'nope' }));
    const spec = JSON.parse(specJson('no-policy'));
    delete spec.policy;
    const noPolicy = await submitBinary('no-policy', JSON.stringify(spec));
    const noId = await submitBinary(undefined, specJson('no-id'));
    // An answer may only go to an inbox: the orchestrator would otherwise publish run events for
    // whoever names the subject.
    const forged = await pipeline.jetstream().publish('duel.ctl.run.submit', encode(specJson('forger')), {
      headers: binary('forger', 'dev.duel.run.submit', 'application/json', 'duel.run.calm.finished'),
    });
    expect(forged.seq).toBeGreaterThan(0);
    const fields = (e: RunEvent) => e.badRequest!.fieldViolations.map((v) => v.field);
    expect(malformed.kind).toBe(EventKind.EVENT_KIND_RUN_REJECTED);
    expect(fields(malformed)).toEqual(['(body)']);
    expect(malformed.message).toMatch(/not valid JSON/);
    expect(fields(unknown)).toEqual(['spec.algorithm']);
    expect(unknown.message).toMatch(/nope/);
    expect(fields(noPolicy)).toEqual(['data: policy']);
    expect([noId.runId, fields(noId)]).toEqual(['', ['ce-id']]);
    // The same answers are on the run subjects, for consumers that did not ask.
    const published: string[] = [];
    for await (const m of sub) {
      published.push(m.subject);
      if (published.length === 5) break;
    }
    sub.unsubscribe();
    expect(published).toEqual([
      'duel.run.bad-json.rejected',
      'duel.run.bad-algo.rejected',
      'duel.run.no-policy.rejected',
      'duel.run._.rejected',
      'duel.run.forger.rejected',
    ]);
    const forgedAnswer = await (await admin.jetstreamManager()).streams.getMessage('DUEL_RUNS', {
      last_by_subj: 'duel.run.forger.rejected',
    });
    expect(RunEvent.decode(forgedAnswer.data).badRequest!.fieldViolations[0]!.field).toBe('ce-replyto');
    await expect(
      (await admin.jetstreamManager()).streams.getMessage('DUEL_RUNS', {
        last_by_subj: 'duel.run.calm.finished',
      }),
    ).rejects.toThrow(/no message found/);
    expect(await runIds()).toEqual(before);
    expect(await controlDrained()).toEqual({ pending: 0, unacked: 0, stored: 0 });
  }, 60_000);

  it('cancels a run mid-way by message; a second cancel, and one of a finished run, answer with its state', async () => {
    const events = eventsOf('to-cancel');
    const created = await submitBinary('to-cancel', specJson('to-cancel', { rounds: 20 }));
    expect(eventName(created.kind)).toBe('accepted');
    // Wait for round 1 to complete, then cancel.
    const sub = await followSubject(admin.jetstream(), 'duel.run.to-cancel.round.1.completed', true);
    for await (const _ of sub) break;
    sub.unsubscribe();
    const cancel = (id: string) =>
      send(`duel.ctl.run.${id}.cancel`, (inbox) => ({
        body: encode(JSON.stringify({ reason: 'pipeline says stop' })),
        headers: binary(`cancel-${id}-${Date.now()}`, 'dev.duel.run.cancel', 'application/json', inbox),
      }));
    const first = await cancel('to-cancel');
    expect([eventName(first.kind), first.message]).toEqual(['cancelled', 'pipeline says stop']);
    const seen = await events;
    expect(seen.at(-1)!.subject).toBe('duel.run.to-cancel.cancelled');
    const record = (await runRecord('to-cancel'))!;
    expect(record.state).toBe(RunState.RUN_STATE_CANCELLED);
    expect(record.currentRound).toBeLessThan(20);
    const second = await cancel('to-cancel');
    expect([eventName(second.kind), second.message]).toEqual(['cancelled', 'pipeline says stop']);
    const finished = await cancel('by-binary');
    expect([eventName(finished.kind), finished.message]).toEqual([
      'finished',
      'run already succeeded: not cancelled',
    ]);
    expect((await runRecord('by-binary'))!.state).toBe(RunState.RUN_STATE_SUCCEEDED);
    const unknown = await cancel('no-such-run');
    expect([eventName(unknown.kind), unknown.runId]).toEqual(['rejected', 'no-such-run']);
    expect(unknown.message).toMatch(/no run 'no-such-run'/);
  }, 120_000);

  it('leaves exactly one run when the orchestrator is SIGKILLed between writing the record and acking', async () => {
    await cluster.orchestrator.stop();
    // The same replica id, as a pod restarted in place: armed to kill itself before the ack.
    const doomed = await cluster.addOrchestrator('orchestrator-doomed', {
      DUEL_ORCHESTRATOR_ID: 'orchestrator',
      DUEL_CRASH_AT: 'control.before-ack',
    });
    const events = eventsOf('killed-at-ack');
    const answer = await submitBinary('killed-at-ack', specJson('killed-at-ack'));
    expect(eventName(answer.kind)).toBe('accepted');
    await new Promise<void>((res) => (doomed.running ? doomed.child.once('exit', () => res()) : res()));
    expect(doomed.child.signalCode).toBe('SIGKILL');
    // Unacked: the message waits for the next orchestrator.
    const c = await (await admin.jetstreamManager()).consumers.info('DUEL_CTL', 'duel-orchestrator');
    expect(c.num_ack_pending + c.num_pending).toBe(1);
    await cluster.orchestrator.start();
    const seen = await events;
    expect(seen.at(-1)!.subject).toBe('duel.run.killed-at-ack.finished');
    const subjects = seen.map((s) => s.subject);
    expect(subjects.filter((s) => s.endsWith('.created'))).toHaveLength(1);
    expect(new Set(subjects).size).toBe(subjects.length);
    expect(await controlDrained()).toEqual({ pending: 0, unacked: 0, stored: 0 });
    expect((await runIds()).filter((id) => id === 'killed-at-ack')).toHaveLength(1);
    expect(await checkpoints('killed-at-ack')).toEqual(await checkpoints('by-binary'));
  }, 180_000);

  it('refuses a user without publish permission on duel.ctl.run.submit at the server: nothing is created', async () => {
    const before = await runIds();
    const watcher = await connectNats({ url: nats.url, user: 'watcher', password: 'w4tch' }, 'watcher');
    const refusals: string[] = [];
    (async () => {
      for await (const s of watcher.status()) if (s.type === 'error') refusals.push(String(s.data));
    })();
    watcher.publish('duel.ctl.run.submit', encode(specJson('sneaky')), {
      headers: binary('sneaky', 'dev.duel.run.submit', 'application/json', createInbox()),
    });
    await watcher.flush();
    for (let i = 0; i < 50 && refusals.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(refusals).toContain('PERMISSIONS_VIOLATION');
    await watcher.close();
    expect(await controlDrained()).toEqual({ pending: 0, unacked: 0, stored: 0 });
    expect(await runIds()).toEqual(before);
  }, 30_000);

  it('examples/pipeline/submit.mjs, as the pipeline user, starts a run and prints its events to the end', async () => {
    const spec = join(root, 'pipeline-spec.json');
    writeFileSync(spec, specJson('from-pipeline', { rounds: 1 }));
    const url = nats.url.replace('nats://', `nats://${PIPELINE.user}:${PIPELINE.password}@`);
    const script = join(packageRoot(), 'examples', 'pipeline', 'submit.mjs');
    const out = await promisify(execFile)(process.execPath, [script, url, spec, 'from-pipeline']);
    const lines = out.stdout.trim().split('\n');
    expect(lines[0]).toBe('dev.duel.run.accepted: run created');
    expect(lines).toContain('duel.run.from-pipeline.round.1.completed');
    expect(lines.at(-1)).toBe('duel.run.from-pipeline.finished');
  }, 120_000);

  it('duel run --nats (the built command) submits, follows the run to its end, and fails on a rejected spec', async () => {
    const run = promisify(execFile);
    const url = nats.url.replace('nats://', 'nats://duel:s3rv1ces@');
    const spec = writeTinySpec(root, 'from-cli', { rounds: 1 });
    const ok = await run(process.execPath, [
      duelBin(),
      'run',
      '--spec',
      spec,
      '--nats',
      url,
      '--id',
      'from-cli',
    ]);
    expect(JSON.parse(ok.stdout)).toMatchObject({ run_id: 'from-cli', state: 'finished' });
    expect(ok.stderr).toMatch(/run from-cli: accepted \(run created\)/);
    expect(ok.stderr).toMatch(/round 1\/1 completed/);
    const bad = writeTinySpec(root, 'bad-cli', { algorithm: 'nope' });
    const err = await run(process.execPath, [
      duelBin(),
      'run',
      '--spec',
      bad,
      '--nats',
      url,
      '--id',
      'bad-cli',
    ]).catch((e: { code: number; stderr: string }) => e);
    expect((err as { code: number }).code).not.toBe(0);
    expect((err as { stderr: string }).stderr).toMatch(/spec\.algorithm/);
    expect(readFileSync(join(root, 'logs', 'orchestrator.log'), 'utf8')).toMatch(/control message rejected/);
  }, 120_000);
});
