// A pipeline's submit, outside duel's code: a run spec as a binary-mode CloudEvent on
// duel.ctl.run.submit, the orchestrator's answer on the inbox named by ce-replyto, then the run's
// events as they are published on duel.run.<id>.> (a plain subscription: the pipeline user of
// docs/SECURITY.md needs no JetStream API). Needs `nats` and `protobufjs` from npm.
//
//   node submit.mjs nats://pipeline:PASSWORD@nats:4222 spec.json my-run-id
import { readFileSync } from 'node:fs';
import { connect, createInbox, headers } from 'nats';
import protobuf from 'protobufjs';

const [url, specFile, id] = process.argv.slice(2);
const proto = new URL('../../proto/', import.meta.url).pathname;
const root = new protobuf.Root();
// The well-known types (google/protobuf/*) are built into protobufjs.
root.resolvePath = (_origin, target) => (target.startsWith('google/protobuf/') ? target : proto + target);
const RunEvent = (await root.load('duel/v1/events.proto', { keepCase: true })).lookupType('duel.v1.RunEvent');

const u = new URL(url);
const nc = await connect({
  servers: `${u.hostname}:${u.port}`,
  user: u.username,
  pass: decodeURIComponent(u.password),
});
const inbox = createInbox();
const answer = nc.subscribe(inbox, { max: 1, timeout: 600_000 });
const events = nc.subscribe(`duel.run.${id}.>`);

const h = headers();
h.set('ce-specversion', '1.0');
h.set('ce-id', id);
h.set('ce-source', '/examples/pipeline');
h.set('ce-type', 'dev.duel.run.submit');
h.set('ce-replyto', inbox);
h.set('content-type', 'application/json');
await nc.jetstream().publish('duel.ctl.run.submit', readFileSync(specFile), { headers: h });

for await (const m of answer) {
  const e = RunEvent.toObject(RunEvent.decode(m.data), { enums: String });
  console.log(`${m.headers.get('ce-type')}: ${e.message}`);
  for (const v of e.bad_request?.field_violations ?? []) console.log(`  ${v.field}: ${v.description}`);
  if (m.headers.get('ce-type') !== 'dev.duel.run.accepted') process.exit(1);
}
for await (const m of events) {
  console.log(m.subject);
  if (/\.(finished|failed|cancelled)$/.test(m.subject)) break;
}
await nc.close();
