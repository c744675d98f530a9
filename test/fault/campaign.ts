/**
 * The fault campaign: one seeded multi-round run through the real suite (nats-server,
 * sampler, scorer, trainer and orchestrator as OS processes), with SIGKILLs of a seeded choice of
 * processes at seeded moments, each restarted as Kubernetes would restart a crashed pod. After
 * the run ends (or fails to end), everything the issue promises is checked from the outside:
 * the run completed or failed with a reason, every stage event is in the stream exactly once, no
 * round was published twice, every checkpoint verifies against its digest, and nothing partial
 * sits under a final name in the artifact store.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { LocalCluster, type ServiceProcess } from '../../src/client/local-cluster.js';
import { EventKind } from '../../src/gen/duel/v1/events.js';
import { type Run, RunState, RunsServiceClient } from '../../src/gen/duel/v1/runs.js';
import { rng } from '../../src/models/common/rng.js';
import { MANIFEST, sha256, verifyArtifact } from '../../src/platform/artifacts.js';
import { callUnary } from '../../src/platform/grpc/client.js';
import { connectNats } from '../../src/platform/nats.js';
import { NatsServer } from '../../src/platform/nats-server.js';
import { readRunSpec } from '../../src/platform/run-spec.js';
import { writeTinyRun, writeTinySpec } from '../helpers/tiny-run.js';

export const TARGETS = ['sampler', 'scorer', 'trainer', 'orchestrator', 'nats-server'] as const;
export type Target = (typeof TARGETS)[number];

export interface Fault {
  target: Target;
  /** Milliseconds after the run was created. */
  atMs: number;
  /** The run's stage when the fault hit, as the harness last saw it. */
  stage: string;
}

export interface CampaignRun {
  seed: number;
  faults: Fault[];
  outcome: 'completed' | 'failed cleanly' | 'hung';
  message: string;
  rounds: number;
  /** Every broken promise, named; empty when nothing was lost. */
  lost: string[];
  seconds: number;
}

export interface CampaignOptions {
  rounds: number;
  maxFaults: number;
  /** Gap before each fault, uniform in [min, max] ms. */
  gapMs: [number, number];
  /** How long a killed process stays down, uniform in [0, max] ms. */
  downMs: number;
  timeoutMs: number;
}

export const DEFAULT_CAMPAIGN: CampaignOptions = {
  rounds: 5,
  maxFaults: 4,
  gapMs: [200, 2000],
  downMs: 800,
  timeoutMs: 150_000,
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ROUND_STAGES = ['started', 'sampled', 'scored', 'trained', 'evaluated', 'completed'];

export async function faultRun(seed: number, o: CampaignOptions = DEFAULT_CAMPAIGN): Promise<CampaignRun> {
  const t0 = Date.now();
  const draw = rng(seed);
  const uniform = (a: number, b: number) => a + (b - a) * draw();
  const root = mkdtempSync(join(tmpdir(), `duel-fault-${seed}-`));
  writeTinyRun(root);
  const nats = await NatsServer.start({ storeDir: join(root, 'nats') });
  let cluster: LocalCluster | undefined;
  try {
    cluster = await LocalCluster.start({
      natsUrl: nats.url,
      artifactsRoot: join(root, 'artifacts'),
      logDir: join(root, 'logs'),
      env: { DUEL_ORCHESTRATOR_MAX_WAIT_MS: '60000', DUEL_LOG_LEVEL: 'info' },
    });
    const c = cluster;
    const id = `fault-${seed}`;
    const spec = readRunSpec(
      writeTinySpec(root, id, {
        rounds: o.rounds,
        seed,
        optimizer: { name: 'sgd', learning_rate: 0.05, steps: 6, batch_size: 3 },
      }),
    );
    const client = new RunsServiceClient(c.orchestrator.address, grpc.credentials.createInsecure());
    let seen: Run | undefined;
    const getRun = async () => {
      try {
        seen = (await callUnary(client, client.getRun, { runId: id }, { deadlineMs: 2000 }, 'GetRun')).run;
      } catch {
        // The orchestrator or NATS is down: the next poll asks again.
      }
      return seen;
    };
    try {
      await callUnary(client, client.createRun, { spec, runId: id }, { deadlineMs: 30_000 }, 'CreateRun');
      const created = Date.now();
      const terminal = (r: Run | undefined) =>
        r !== undefined && r.state !== RunState.RUN_STATE_RUNNING && r.state !== RunState.RUN_STATE_PENDING;

      const faults: Fault[] = [];
      const processes: Partial<Record<Target, ServiceProcess>> = {
        sampler: c.samplers[0],
        scorer: c.scorers[0],
        trainer: c.trainer,
        orchestrator: c.orchestrator,
      };
      let ended = false;
      const injector = (async () => {
        for (let i = 0; i < o.maxFaults && !ended; i++) {
          await sleep(uniform(o.gapMs[0], o.gapMs[1]));
          if (ended) break;
          const target = TARGETS[Math.floor(draw() * TARGETS.length)]!;
          const stage = seen ? `round ${seen.currentRound}, ${stageName(seen)}` : 'before the first poll';
          faults.push({ target, atMs: Date.now() - created, stage });
          const down = uniform(0, o.downMs);
          const p = processes[target];
          if (p) {
            await p.stop('SIGKILL');
            await sleep(down);
            await p.start();
          } else {
            await nats.restart(true);
          }
        }
      })();

      let run: Run | undefined;
      while (Date.now() - created < o.timeoutMs) {
        run = await getRun();
        if (terminal(run)) break;
        await sleep(250);
      }
      ended = true;
      await injector;
      // A fault in the last moment may have hit after the poll saw the end: read the record again.
      run = terminal(run) ? ((await getRun()) ?? run) : run;
      const outcome: CampaignRun['outcome'] = !terminal(run)
        ? 'hung'
        : run!.state === RunState.RUN_STATE_SUCCEEDED
          ? 'completed'
          : 'failed cleanly';
      const lost = await audit(root, nats.url, id, run, o.rounds);
      if (outcome === 'failed cleanly' && !run!.message) lost.push('the run failed without a reason');
      return {
        seed,
        faults,
        outcome,
        message: run?.message ?? 'no record',
        rounds: run?.rounds.length ?? 0,
        lost,
        seconds: (Date.now() - t0) / 1000,
      };
    } finally {
      client.close();
    }
  } finally {
    await cluster?.stop();
    await nats.stop();
    rmSync(root, { recursive: true, force: true });
  }
}

function stageName(r: Run): string {
  return (EventKind[r.currentStage] ?? String(r.currentStage)).replace(/^EVENT_KIND_/, '').toLowerCase();
}

/** Every promise of the issue checked from outside the suite; returns what was broken. */
async function audit(root: string, natsUrl: string, id: string, run: Run | undefined, rounds: number) {
  const lost: string[] = [];
  // Events: each subject at most once; a completed run has every stage of every round.
  const nc = await connectNats(natsUrl, 'fault-audit');
  try {
    const info = await (await nc.jetstreamManager()).streams.info('DUEL_RUNS', {
      subjects_filter: `duel.run.${id}.>`,
    });
    const counts = (info.state.subjects ?? {}) as Record<string, number>;
    for (const [subject, n] of Object.entries(counts))
      if (n !== 1) lost.push(`${subject} is in the stream ${n} times`);
    if (run?.state === RunState.RUN_STATE_SUCCEEDED) {
      const want = [
        `duel.run.${id}.created`,
        ...Array.from({ length: rounds }, (_, r) =>
          ROUND_STAGES.map((s) => `duel.run.${id}.round.${r + 1}.${s}`),
        ).flat(),
        `duel.run.${id}.finished`,
      ];
      for (const s of want) if (!(s in counts)) lost.push(`${s} is missing from the stream`);
    }
    if (run?.state === RunState.RUN_STATE_FAILED && !(`duel.run.${id}.failed` in counts))
      lost.push('the run failed without a failed event');
  } finally {
    await nc.close();
  }
  // Rounds: published at most once each; a completed run's checkpoints all there and verified.
  const trainerLog = readFileSync(join(root, 'logs', 'trainer.log'), 'utf8');
  const published = new Map<number, number>();
  for (const line of trainerLog.split('\n')) {
    if (!line.includes('"msg":"round published"') || !line.includes(`"run":"${id}"`)) continue;
    const round = Number(/"round":(\d+)/.exec(line)?.[1]);
    published.set(round, (published.get(round) ?? 0) + 1);
  }
  for (const [round, n] of published) if (n > 1) lost.push(`round ${round} was published ${n} times`);
  if (run?.state === RunState.RUN_STATE_SUCCEEDED) {
    if (run.rounds.length !== rounds) lost.push(`the record has ${run.rounds.length} of ${rounds} rounds`);
    for (const r of run.rounds) {
      const a = r.checkpoint?.artifact;
      if (!a) {
        lost.push(`round ${r.round} has no checkpoint`);
        continue;
      }
      try {
        verifyArtifact(fileURLToPath(a.uri), a.sha256);
      } catch (e) {
        lost.push(`round ${r.round}: ${(e as Error).message}`);
      }
    }
  }
  // The store: whatever sits under a final name (no leading dot) is a whole, verifiable artifact.
  const dir = join(root, 'artifacts', 'runs', id);
  for (const name of existsSync(dir) ? readdirSync(dir) : []) {
    if (name.startsWith('.')) continue;
    try {
      const manifest = join(dir, name, MANIFEST);
      verifyArtifact(join(dir, name), existsSync(manifest) ? sha256(readFileSync(manifest)) : '');
    } catch (e) {
      lost.push(`artifacts/runs/${id}/${name} is visible but not whole: ${(e as Error).message}`);
    }
  }
  return lost;
}

/** The campaign's tallies, as RELIABILITY.md reports them. */
export function tally(runs: CampaignRun[]) {
  const byTarget = Object.fromEntries(TARGETS.map((t) => [t, 0])) as Record<Target, number>;
  for (const r of runs) for (const f of r.faults) byTarget[f.target]++;
  return {
    runs: runs.length,
    faults: runs.reduce((a, r) => a + r.faults.length, 0),
    byTarget,
    completed: runs.filter((r) => r.outcome === 'completed').length,
    failedCleanly: runs.filter((r) => r.outcome === 'failed cleanly').length,
    hung: runs.filter((r) => r.outcome === 'hung').length,
    dataLost: runs.reduce((a, r) => a + r.lost.length, 0),
  };
}
