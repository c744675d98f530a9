/**
 * Whole runs through the real suite: nats-server, two samplers, a scorer, the trainer and the
 * orchestrator as separate processes (src/cli/local-cluster.ts), watched by an independent
 * JetStream consumer. A clean 2-round run, the orchestrator killed with SIGKILL mid-round and
 * restarted, and a sampler replica killed mid-round.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '../../src/client/local-cluster.js';
import { readRunSpec } from '../../src/client/run-spec.js';
import { submitRun } from '../../src/client/runs.js';
import { EventKind, RunEvent } from '../../src/gen/duel/v1/events.js';
import { Run, RunState, RunsServiceClient } from '../../src/gen/duel/v1/runs.js';
import { initJudgeWeights } from '../../src/models/judge/model.js';
import { saveJudgeDir } from '../../src/models/judge/runner.js';
import { initLlamaWeights } from '../../src/models/llama/weights.js';
import { saveModelDir } from '../../src/models/model-dir.js';
import { verifyArtifact } from '../../src/platform/artifacts.js';
import { callUnary } from '../../src/platform/grpc/client.js';
import { connectNats, followSubject, type NatsConnection } from '../../src/platform/nats.js';
import { tinyJudgeConfig, tinyLlamaConfig } from '../models/fixtures.js';

let root: string;
let cluster: LocalCluster;
let nc: NatsConnection;

const ROUND_STAGES = ['started', 'sampled', 'scored', 'trained', 'evaluated', 'completed'];
const expectedSubjects = (id: string, rounds: number) => [
  `duel.run.${id}.created`,
  ...Array.from({ length: rounds }, (_, r) =>
    ROUND_STAGES.map((s) => `duel.run.${id}.round.${r + 1}.${s}`),
  ).flat(),
  `duel.run.${id}.finished`,
];

/** Every event of run `id` as an independent consumer sees it, until the run ends. */
async function consume(id: string, onEvent: (subject: string, e: RunEvent) => void = () => {}) {
  const sub = await followSubject(nc.jetstream(), `duel.run.${id}.>`, true);
  const seen: { subject: string; event: RunEvent }[] = [];
  const done = (async () => {
    for await (const m of sub) {
      const event = RunEvent.decode(m.data);
      seen.push({ subject: m.subject, event });
      onEvent(m.subject, event);
      if ([EventKind.EVENT_KIND_RUN_FINISHED, EventKind.EVENT_KIND_RUN_FAILED].includes(event.kind)) break;
    }
    sub.unsubscribe();
    return seen;
  })();
  return done;
}

function writeSpec(name: string, extra: Record<string, unknown> = {}): string {
  const spec = {
    name,
    algorithm: 'sppo',
    hyperparameters: { k: 3, eta: 2 },
    policy: 'policy',
    judge: 'judge',
    prompts: 'prompts.jsonl',
    rounds: 2,
    seed: 7,
    eval_samples_per_prompt: 2,
    sampling: { max_new_tokens: 4, temperature: 1 },
    optimizer: { name: 'sgd', learning_rate: 0.05, steps: 2, batch_size: 3 },
    ...extra,
  };
  const file = join(root, `${name}.json`);
  writeFileSync(file, JSON.stringify(spec));
  return file;
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'duel-e2e-'));
  const cfg = tinyLlamaConfig(0);
  saveModelDir(join(root, 'policy'), cfg, initLlamaWeights(cfg, 3));
  saveJudgeDir(join(root, 'judge'), tinyJudgeConfig(), initJudgeWeights(tinyJudgeConfig(), 4));
  writeFileSync(
    join(root, 'prompts.jsonl'),
    [[1, 2], [3], [4, 5, 6], [7, 8], [9], [10, 11]].map((p) => JSON.stringify({ prompt_ids: p })).join('\n'),
  );
  cluster = await LocalCluster.start({
    samplers: 2,
    scorers: 1,
    artifactsRoot: join(root, 'artifacts'),
    logDir: join(root, 'logs'),
    // Small shards so that every stage spreads over both samplers.
    env: { DUEL_ORCHESTRATOR_PROMPTS_PER_CALL: '2', DUEL_ORCHESTRATOR_MAX_WAIT_MS: '30000' },
  });
  nc = await connectNats(cluster.natsUrl, 'e2e-observer');
}, 120_000);

afterAll(async () => {
  await nc?.close();
  await cluster?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

const client = () => new RunsServiceClient(cluster.orchestrator.address, grpc.credentials.createInsecure());

async function kvRun(id: string): Promise<Run> {
  const kv = await nc.jetstream().views.kv('duel_runs');
  return Run.decode((await kv.get(id))!.value);
}

const orchestratorLog = () => readFileSync(join(root, 'logs', 'orchestrator.log'), 'utf8');
const publishedRounds = () =>
  (readFileSync(join(root, 'logs', 'trainer.log'), 'utf8').match(/"msg":"round published"/g) ?? []).length;

describe('a run through the whole suite', () => {
  it('runs 2 rounds: events in order exactly once, checkpoints verified, the run record complete', async () => {
    const events = consume('clean');
    const run = await submitRun(cluster.orchestrator.address, readRunSpec(writeSpec('clean')), {
      id: 'clean',
      log: () => {},
    });
    expect(run.state).toBe(RunState.RUN_STATE_SUCCEEDED);
    const seen = await events;
    expect(seen.map((s) => s.subject)).toEqual(expectedSubjects('clean', 2));

    const trained = seen.filter((s) => s.event.kind === EventKind.EVENT_KIND_ROUND_TRAINED);
    for (const [i, t] of trained.entries()) {
      expect(t.event.checkpoint!.round).toBe(i + 1);
      expect(t.event.checkpoint!.artifact!.uri).toContain(`runs/clean/round-${i + 1}`);
      verifyArtifact(fileURLToPath(t.event.checkpoint!.artifact!.uri), t.event.checkpoint!.artifact!.sha256);
    }
    const evaluated = seen.find((s) => s.event.kind === EventKind.EVENT_KIND_ROUND_EVALUATED)!.event;
    expect(evaluated.metrics!.values.win_rate_vs_ref).toBeGreaterThan(0);
    expect(evaluated.metrics!.values.win_rate_vs_ref).toBeLessThan(1);

    const record = await kvRun('clean');
    expect(record.state).toBe(RunState.RUN_STATE_SUCCEEDED);
    expect(record.rounds.map((r) => r.round)).toEqual([1, 2]);
    expect(record.latestCheckpoint!.artifact).toEqual(trained[1]!.event.checkpoint!.artifact);
    // Both samplers did work (the stage was sharded).
    for (const s of ['sampler-0', 'sampler-1'])
      expect(readFileSync(join(root, 'logs', `${s}.log`), 'utf8')).toMatch(
        /"rpc":"\/duel\.v1\.PolicySamplerService\/Sample".*"run":"clean"/,
      );
  }, 120_000);

  it('finishes a run whose orchestrator was killed with SIGKILL mid-round, each event once, no round trained twice', async () => {
    const before = publishedRounds();
    let restarted: Promise<void> | undefined;
    const events = consume('crash', (subject) => {
      // Kill the orchestrator right after round 1's training was announced (before the record
      // says so is possible too: the stage then repeats and the trainer recognises the round).
      if (subject.endsWith('.round.1.trained') && !restarted)
        restarted = cluster.orchestrator.stop('SIGKILL').then(() => cluster.orchestrator.start());
    });
    const c = client();
    await callUnary(
      c,
      c.createRun,
      { spec: readRunSpec(writeSpec('crash')), runId: 'crash' },
      { deadlineMs: 30_000 },
      'CreateRun',
    );
    c.close();
    const seen = await events;
    await restarted;
    expect(seen.map((s) => s.subject)).toEqual(expectedSubjects('crash', 2));
    expect((await kvRun('crash')).state).toBe(RunState.RUN_STATE_SUCCEEDED);
    expect(publishedRounds() - before).toBe(2);
    expect(orchestratorLog()).toMatch(/"runs":\["crash"\],"msg":"resumed runs"/);
  }, 180_000);

  it('finishes a run when a sampler replica is killed mid-round', async () => {
    let killed: Promise<unknown> | undefined;
    const events = consume('replica', (subject) => {
      if (subject.endsWith('.round.1.started') && !killed) killed = cluster.samplers[1]!.stop('SIGKILL');
    });
    const c = client();
    await callUnary(
      c,
      c.createRun,
      { spec: readRunSpec(writeSpec('replica')), runId: 'replica' },
      { deadlineMs: 30_000 },
      'CreateRun',
    );
    c.close();
    const seen = await events;
    await killed;
    expect(seen.map((s) => s.subject)).toEqual(expectedSubjects('replica', 2));
    expect((await kvRun('replica')).state).toBe(RunState.RUN_STATE_SUCCEEDED);
    // The dead replica's shards moved to the live one.
    expect(orchestratorLog()).toMatch(
      /"replica":"[^"]+","role":"sampler".*"msg":"replica failed a shard; moving it"/,
    );
    await cluster.samplers[1]!.start();
  }, 180_000);

  it('refuses a bad spec with INVALID_ARGUMENT naming the field, and stays serving', async () => {
    const spec = readRunSpec(writeSpec('bad', { hyperparameters: { eta: -1 } }));
    const c = client();
    const err = await callUnary(
      c,
      c.createRun,
      { spec: { ...spec, rounds: 0 }, runId: 'bad' },
      { deadlineMs: 10_000 },
      'CreateRun',
    ).catch((e) => e);
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.message).toContain('spec.rounds');
    const err2 = await callUnary(
      c,
      c.createRun,
      { spec, runId: 'bad' },
      { deadlineMs: 10_000 },
      'CreateRun',
    ).catch((e) => e);
    expect(err2.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err2.message).toMatch(/eta/);
    const err3 = await callUnary(c, c.getRun, { runId: 'Not A Run' }, { deadlineMs: 10_000 }, 'GetRun').catch(
      (e) => e,
    );
    expect(err3.code).toBe(grpc.status.INVALID_ARGUMENT);
    c.close();
  });
});
