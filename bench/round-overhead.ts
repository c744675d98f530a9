/**
 * `duel bench round-overhead`: how much of a self-play round is not model work. A real run goes
 * through the local suite (nats-server and the four services as processes) with the testbed's
 * model sizes and prompts (random weights); each round's window runs from its `started` event to its `completed` event, and model
 * work is the union of the intervals in which a sampler, scorer or trainer handled one of the
 * run's calls (from their access logs: end time and duration). Overhead is the rest of the window:
 * events and KV updates, prompt and record assembly, gRPC transfer, and waiting between stages.
 * With `tracing`, every service exports its spans (OTLP/HTTP) to a sink in this process that
 * counts and drops them, as a collector would take them: the cost of tracing on.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RunEvents } from '../services/orchestrator/events.js';
import { openRunStore } from '../services/orchestrator/run-store.js';
import { LocalCluster } from '../src/client/local-cluster.js';
import { submitRun } from '../src/client/runs.js';
import { EventKind, RunEvent } from '../src/gen/duel/v1/events.js';
import { Run } from '../src/gen/duel/v1/runs.js';
import { initJudgeWeights } from '../src/models/judge/model.js';
import { saveJudgeDir } from '../src/models/judge/runner.js';
import { initLlamaWeights } from '../src/models/llama/weights.js';
import { saveModelDir } from '../src/models/model-dir.js';
import { connectNats, followSubject, type NatsConnection } from '../src/platform/nats.js';
import { freePort } from '../src/platform/nats-server.js';
import { isTerminal } from '../src/platform/run-events.js';
import { readRunSpec } from '../src/platform/run-spec.js';
import { buildSchema, judgeConfig, policyConfig } from '../src/testbed/build.js';
import { drawPrompts } from '../src/testbed/corpus.js';
import { maxNewTokens, parseGame, promptIds } from '../src/testbed/game.js';
import { median } from './measure.js';

const GAME = parseGame({});
const BUILD = buildSchema.parse({});

export interface RoundOverhead {
  round: number;
  round_ms: number;
  model_ms: number;
  overhead_ms: number;
  overhead_fraction: number;
  /** The longest stretches without model work: what ended before each and what began after. */
  gaps: { ms: number; after: string; before: string }[];
}

type Interval = [number, number];
interface Call {
  rpc: string;
  from: number;
  to: number;
}

/** Length of the union of `intervals` inside [from, to]. */
function coveredMs(intervals: Interval[], from: number, to: number): number {
  const clipped = intervals
    .map(([a, b]): Interval => [Math.max(a, from), Math.min(b, to)])
    .filter(([a, b]) => b > a)
    .sort((x, y) => x[0] - y[0]);
  let covered = 0;
  let end = -Infinity;
  for (const [a, b] of clipped) {
    if (b <= end) continue;
    covered += b - Math.max(a, end);
    end = b;
  }
  return covered;
}

/** Every call of run `runId` in a service's JSON access log, with its start and end. */
function callsOf(logFile: string, runId: string): Call[] {
  const out: Call[] = [];
  for (const line of readFileSync(logFile, 'utf8').split('\n')) {
    if (!line.includes('"msg":"rpc"')) continue;
    const l = JSON.parse(line) as { time: number; ms: number; run?: string; rpc: string };
    if (l.run === runId) out.push({ rpc: l.rpc.split('/')[2]!, from: l.time - l.ms, to: l.time });
  }
  return out;
}

/** Uncovered stretches of [from, to], longest first, named by the calls around them. */
function gapsOf(calls: Call[], from: number, to: number, top: number): RoundOverhead['gaps'] {
  const sorted = calls.filter((c) => c.to > from && c.from < to).sort((a, b) => a.from - b.from);
  const gaps: RoundOverhead['gaps'] = [];
  let end = from;
  let last = 'round started';
  for (const c of sorted) {
    if (c.from > end) gaps.push({ ms: c.from - end, after: last, before: c.rpc });
    if (c.to > end) {
      end = c.to;
      last = c.rpc;
    }
  }
  if (to > end) gaps.push({ ms: to - end, after: last, before: 'round completed' });
  return gaps.sort((a, b) => b.ms - a.ms).slice(0, top);
}

/** π_ref-shaped and judge-shaped models of the testbed's default sizes, randomly initialised. */
export function benchModels(root: string): { policy: string; judge: string } {
  const policy = join(root, 'policy');
  const cfg = policyConfig(GAME, BUILD);
  saveModelDir(policy, cfg, initLlamaWeights(cfg, 1));
  const judge = join(root, 'judge');
  const jcfg = judgeConfig(GAME, BUILD);
  saveJudgeDir(judge, jcfg, initJudgeWeights(jcfg, 2));
  return { policy, judge };
}

/** Median ms of the orchestrator's two NATS writes per stage: a publish-once event and a run-record CAS. */
export interface NatsCosts {
  event_ms: number;
  cas_ms: number;
}

async function timeNats(nc: NatsConnection, n = 20): Promise<NatsCosts> {
  const events = await RunEvents.open(nc);
  const store = await openRunStore(nc);
  const runId = 'bench-nats-costs';
  await store.create(runId, Run.fromPartial({ runId }));
  const event: number[] = [];
  const cas: number[] = [];
  for (let round = 1; round <= n; round++) {
    let t0 = performance.now();
    await events.emit(
      RunEvent.fromPartial({ runId, round, kind: EventKind.EVENT_KIND_ROUND_STARTED, time: new Date() }),
    );
    event.push(performance.now() - t0);
    t0 = performance.now();
    await store.update(runId, (r) => ({ ...r, currentRound: round }));
    cas.push(performance.now() - t0);
  }
  return { event_ms: median(event), cas_ms: median(cas) };
}

/** An OTLP/HTTP endpoint that counts the spans it is sent and keeps nothing. */
async function spanSink(): Promise<{ endpoint: string; spans: () => number; close: () => void }> {
  let spans = 0;
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      spans += (body.match(/"spanId"/g) ?? []).length;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { endpoint: `http://127.0.0.1:${port}/v1/traces`, spans: () => spans, close: () => server.close() };
}

export async function runRoundOverheadBench(o: {
  rounds: number;
  prompts: number;
  tracing?: boolean;
  log: (l: string) => void;
}): Promise<{ rounds: RoundOverhead[]; total: RoundOverhead; nats: NatsCosts; spans_exported: number }> {
  const root = mkdtempSync(join(tmpdir(), 'duel-bench-round-'));
  const logDir = join(root, 'logs');
  const sink = o.tracing ? await spanSink() : undefined;
  const cluster = await LocalCluster.start({
    artifactsRoot: join(root, 'artifacts'),
    logDir,
    env: {
      // One call per stage and replica: the shard size covers every prompt.
      DUEL_ORCHESTRATOR_PROMPTS_PER_CALL: String(o.prompts),
      ...(sink ? { DUEL_TELEMETRY_OTLP_ENDPOINT: sink.endpoint } : {}),
    },
  });
  const id = 'overhead';
  const events: RunEvent[] = [];
  let nats: NatsCosts = { event_ms: Number.NaN, cas_ms: Number.NaN };
  try {
    const { policy, judge } = benchModels(root);
    writeFileSync(
      join(root, 'prompts.jsonl'),
      drawPrompts(GAME, o.prompts, 1)
        .map((t) => JSON.stringify({ prompt_ids: promptIds(t) }))
        .join('\n'),
    );
    writeFileSync(
      join(root, 'spec.json'),
      JSON.stringify({
        name: id,
        algorithm: 'sppo',
        hyperparameters: { k: 4, eta: 8 },
        policy,
        judge,
        prompts: 'prompts.jsonl',
        rounds: o.rounds,
        seed: 1,
        eval_samples_per_prompt: 4,
        sampling: { max_new_tokens: maxNewTokens(GAME), temperature: 1 },
        optimizer: { name: 'adamw', learning_rate: 1e-3, epochs: 1, batch_size: 16 },
      }),
    );
    await submitRun(cluster.orchestrator.address, readRunSpec(join(root, 'spec.json')), { id, log: o.log });
    const nc = await connectNats(cluster.natsUrl, 'bench');
    const sub = await followSubject(nc.jetstream(), `duel.run.${id}.>`, true);
    for await (const m of sub) {
      const e = RunEvent.decode(m.data);
      events.push(e);
      if (isTerminal(e.kind)) break;
    }
    nats = await timeNats(nc);
    await nc.close();
  } finally {
    // Stopped before the logs are read, so every line is on disk (and every span exported).
    await cluster.stop();
    sink?.close();
  }
  try {
    const calls = ['sampler-0', 'scorer-0', 'trainer'].flatMap((s) => callsOf(join(logDir, `${s}.log`), id));
    const intervals = calls.map((c): Interval => [c.from, c.to]);
    const at = (round: number, kind: EventKind) =>
      events.find((e) => e.round === round && e.kind === kind)!.time!.getTime();
    const rounds = Array.from({ length: o.rounds }, (_, i): RoundOverhead => {
      const from = at(i + 1, EventKind.EVENT_KIND_ROUND_STARTED);
      const to = at(i + 1, EventKind.EVENT_KIND_ROUND_COMPLETED);
      const model = coveredMs(intervals, from, to);
      return {
        round: i + 1,
        round_ms: to - from,
        model_ms: model,
        overhead_ms: to - from - model,
        overhead_fraction: (to - from - model) / (to - from),
        gaps: gapsOf(calls, from, to, 4),
      };
    });
    const sum = (k: 'round_ms' | 'model_ms' | 'overhead_ms') => rounds.reduce((a, r) => a + r[k], 0);
    const total = {
      round: 0,
      round_ms: sum('round_ms'),
      model_ms: sum('model_ms'),
      overhead_ms: sum('overhead_ms'),
      overhead_fraction: sum('overhead_ms') / sum('round_ms'),
      gaps: [],
    };
    return { rounds, total, nats, spans_exported: sink?.spans() ?? 0 };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}
