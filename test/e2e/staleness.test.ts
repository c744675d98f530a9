/**
 * Overlapping rounds (max_staleness 1) through the suite as processes: round t+1 is sampled from
 * π_{t−1} while round t trains, every record and event carries the version it came from, and a
 * SIGKILL of the orchestrator or of the trainer while two rounds are in flight loses nothing:
 * every stage's event once, and the weights of a run nobody disturbed.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRecords } from '../../services/orchestrator/round-records.js';
import { LocalCluster } from '../../src/client/local-cluster.js';
import { submitRun } from '../../src/client/runs.js';
import { Run, RunState } from '../../src/gen/duel/v1/runs.js';
import { resolveFileArtifact } from '../../src/platform/artifacts.js';
import { connectNats, type NatsConnection } from '../../src/platform/nats.js';
import { eventName } from '../../src/platform/run-events.js';
import { readRunSpec } from '../../src/platform/run-spec.js';
import { eventsUntilEnd, type SeenEvent } from '../helpers/run-events.js';
import { writeTinyRun, writeTinySpec } from '../helpers/tiny-run.js';
import { fileTempDir } from '../helpers/tmp.js';

const ROUNDS = 4;
const root = fileTempDir('duel-staleness-');
let cluster: LocalCluster;
let nc: NatsConnection;

beforeAll(async () => {
  writeTinyRun(root);
  cluster = await LocalCluster.start({
    bus: 'nats',
    artifactsRoot: join(root, 'artifacts'),
    logDir: join(root, 'logs'),
    // As `duel bench overlap` runs them: the trainer on a CPU of its own.
    cpus: { trainer: '0' },
  });
  nc = await connectNats(cluster.natsUrl, 'staleness-test');
}, 120_000);

afterAll(async () => {
  await nc?.close();
  await cluster?.stop();
});

const spec = (name: string, staleness: number) =>
  readRunSpec(writeTinySpec(root, name, { rounds: ROUNDS, max_staleness: staleness }));

async function record(id: string): Promise<Run> {
  return Run.decode((await (await nc.jetstream().views.kv('duel_runs')).get(id))!.value);
}

const weights = async (id: string) =>
  (await record(id)).rounds.map((r) =>
    createHash('sha256')
      .update(readFileSync(join(fileURLToPath(r.checkpoint!.artifact!.uri), 'model.safetensors')))
      .digest('hex'),
  );

/** Runs `id` to its end, calling `onEvent` for each event as an outside consumer sees it. */
async function run(
  id: string,
  staleness: number,
  onEvent: (subject: string) => Promise<void> | void = () => {},
): Promise<SeenEvent[]> {
  const done = eventsUntilEnd(nc, id, onEvent);
  await submitRun(cluster.orchestrator.address, spec(id, staleness), { id, detach: true, log: () => {} });
  return done;
}

const roundSubjects = (id: string) =>
  Array.from({ length: ROUNDS }, (_, r) =>
    ['started', 'sampled', 'scored', 'trained', 'evaluated', 'completed'].map(
      (s) => `duel.run.${id}.round.${r + 1}.${s}`,
    ),
  ).flat();

describe('overlapping rounds (max_staleness 1)', () => {
  it('samples round t+1 from π_{t−1} while round t trains; versions on records, events and the record', async () => {
    const seen = await run('overlap', 1);
    const subjects = seen.map((s) => s.subject);
    expect([...subjects].sort()).toEqual(
      ['created', 'finished']
        .map((k) => `duel.run.overlap.${k}`)
        .concat(roundSubjects('overlap'))
        .sort(),
    );
    expect((await record('overlap')).state).toBe(RunState.RUN_STATE_SUCCEEDED);
    // Round 2 began before round 1 was trained: the two overlapped.
    expect(subjects.indexOf('duel.run.overlap.round.2.started')).toBeLessThan(
      subjects.indexOf('duel.run.overlap.round.1.trained'),
    );
    // Round t is sampled from version max(0, t − 2) and trains version t − 1.
    const versionOf = (round: number, stage: string) =>
      seen.find((s) => s.subject === `duel.run.overlap.round.${round}.${stage}`)!.event.policyVersion;
    for (let t = 1; t <= ROUNDS; t++) {
      expect(versionOf(t, 'sampled')).toBe(Math.max(0, t - 2));
      expect(versionOf(t, 'trained')).toBe(t);
    }
    const rec = await record('overlap');
    expect(rec.rounds.map((r) => r.policyVersion)).toEqual([0, 0, 1, 2]);
    const scored = await readRecords(resolveFileArtifact, rec.rounds[2]!.scored!);
    expect(new Set(scored.map((r) => r.policyVersion))).toEqual(new Set([1]));
    // The behaviour policy's log-probs travel with each completion.
    expect(scored[0]!.completions[0]!.tokenLogprobs.length).toBe(scored[0]!.completions[0]!.tokenIds.length);
    // A run without overlap samples round 2 from π_1: another policy, other log-probs.
    await run('in-step', 0);
    const round2 = async (id: string) =>
      readRecords(resolveFileArtifact, (await record(id)).rounds[1]!.sampled!);
    const [stale, fresh] = [await round2('overlap'), await round2('in-step')];
    expect([stale[0]!.policyVersion, fresh[0]!.policyVersion]).toEqual([0, 1]);
    // The tiny policy moves little in a round: the same tokens, log-probs apart in the 7th digit.
    const logprobs = (rs: typeof stale) => rs.flatMap((r) => r.completions.map((c) => c.logprob));
    expect(logprobs(stale)).not.toEqual(logprobs(fresh));
    expect((await weights('overlap'))[0]).toBe((await weights('in-step'))[0]);
  }, 180_000);

  it('runs a service on the CPUs it was given (taskset)', async () => {
    const allowed = () =>
      /Cpus_allowed_list:\s*(\S+)/.exec(
        readFileSync(`/proc/${cluster.trainer.child.pid}/status`, 'utf8'),
      )![1];
    expect(allowed()).toBe('0');
    expect(
      /Cpus_allowed_list:\s*(\S+)/.exec(
        readFileSync(`/proc/${cluster.samplers[0]!.child.pid}/status`, 'utf8'),
      )![1],
    ).not.toBe('0');
  });

  it('loses nothing when the orchestrator is SIGKILLed with two rounds in flight', async () => {
    let restarted: Promise<void> | undefined;
    const seen = await run('kill-orchestrator', 1, (subject) => {
      if (subject.endsWith('.round.2.started') && !restarted)
        restarted = cluster.orchestrator.stop('SIGKILL').then(() => cluster.orchestrator.start());
    });
    await restarted;
    const subjects = seen.map((s) => s.subject);
    expect(new Set(subjects).size).toBe(subjects.length);
    expect(subjects.filter((s) => s.includes('.round.'))).toHaveLength(ROUNDS * 6);
    expect((await record('kill-orchestrator')).state).toBe(RunState.RUN_STATE_SUCCEEDED);
    expect(await weights('kill-orchestrator')).toEqual(await weights('overlap'));
  }, 180_000);

  it('loses nothing when the trainer is SIGKILLed with two rounds in flight', async () => {
    let restarted: Promise<void> | undefined;
    const seen = await run('kill-trainer', 1, (subject) => {
      if (subject.endsWith('.round.3.started') && !restarted)
        restarted = cluster.trainer.stop('SIGKILL').then(() => cluster.trainer.start());
    });
    await restarted;
    const subjects = seen.map((s) => s.subject);
    expect(new Set(subjects).size).toBe(subjects.length);
    expect(subjects.filter((s) => s.includes('.round.'))).toHaveLength(ROUNDS * 6);
    expect(eventName(seen.at(-1)!.event.kind)).toBe('finished');
    expect(
      /Cpus_allowed_list:\s*(\S+)/.exec(
        readFileSync(`/proc/${cluster.trainer.child.pid}/status`, 'utf8'),
      )![1],
    ).toBe('0');
    expect(await weights('kill-trainer')).toEqual(await weights('overlap'));
  }, 180_000);
});
