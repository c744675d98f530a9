/**
 * The dev overlay's environment, run as a local "cluster": two samplers, a scorer, the trainer and
 * the orchestrator as separate OS processes with the DUEL_* settings the rendered manifests set
 * (only what a pod gets from its cluster is replaced: ports, addresses, the NATS URL and a
 * writable cache directory), on three clustered nats-servers as the manifests run NATS. One run
 * completes with its checkpoints in the nats:// store (three copies), as on the cluster, and a
 * sampler killed mid-run does not fail it.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { LocalCluster } from '../../src/client/local-cluster.js';
import { followRun, runsClient } from '../../src/client/runs.js';
import { EventKind } from '../../src/gen/duel/v1/events.js';
import { RunState } from '../../src/gen/duel/v1/runs.js';
import { callUnary } from '../../src/platform/grpc/client.js';
import { type NatsCluster, NatsServer } from '../../src/platform/nats-server.js';
import { packageRoot } from '../../src/platform/paths.js';
import { readRunSpec } from '../../src/platform/run-spec.js';
import { writeTinyRun, writeTinySpec } from '../helpers/tiny-run.js';
import { fileTempDir } from '../helpers/tmp.js';

/** What the cluster, not the manifest, decides for a pod on this machine. */
const FROM_CLUSTER = new Set([
  'DUEL_PORT',
  'DUEL_METRICS_PORT',
  'DUEL_ARTIFACTS_ROOT',
  'DUEL_TRAINER_ADVERTISE',
]);

function manifestEnv(role: string): NodeJS.ProcessEnv {
  const file = join(packageRoot(), 'deploy', 'rendered', 'dev', `deployment.apps-duel-${role}.yaml`);
  const d = parse(readFileSync(file, 'utf8')) as {
    spec: { template: { spec: { containers: { env: { name: string; value?: string }[] }[] } } };
  };
  const env: NodeJS.ProcessEnv = {};
  for (const e of d.spec.template.spec.containers[0]!.env)
    if (
      e.value !== undefined &&
      !FROM_CLUSTER.has(e.name) &&
      !/^DUEL_ORCHESTRATOR_(SAMPLERS|SCORERS|TRAINER)$/.test(e.name)
    )
      env[e.name] = e.value;
  return env;
}

const root = fileTempDir('duel-k8s-local-');
let cluster: LocalCluster | undefined;
let nats: NatsCluster | undefined;
afterAll(async () => {
  await cluster?.stop();
  await nats?.stop();
});

describe('the dev manifests as local processes', () => {
  it('completes a run with the manifests’ settings while a sampler is killed mid-run', async () => {
    const orchestratorEnv = manifestEnv('orchestrator');
    expect(orchestratorEnv).toMatchObject({
      DUEL_ARTIFACTS_STORE: 'nats',
      DUEL_HOST: '0.0.0.0',
      DUEL_NATS_REPLICAS: '3',
    });
    // As the manifests run NATS: three servers in one JetStream cluster.
    nats = await NatsServer.cluster(3);
    cluster = await LocalCluster.start({
      natsUrl: nats.url,
      samplers: 2,
      artifactsRoot: join(root, 'cache'),
      logDir: join(root, 'logs'),
      roleEnv: {
        sampler: manifestEnv('sampler'),
        scorer: manifestEnv('scorer'),
        trainer: manifestEnv('trainer'),
        orchestrator: { ...orchestratorEnv, DUEL_ORCHESTRATOR_PROMPTS_PER_CALL: '2' },
      },
    });
    writeTinyRun(root);
    const spec = writeTinySpec(root, 'k8s');
    const c = runsClient(cluster.orchestrator.address);
    await callUnary(
      c,
      c.createRun,
      { spec: readRunSpec(spec), runId: 'k8s' },
      { deadlineMs: 30_000 },
      'CreateRun',
    );
    let killed: Promise<unknown> | undefined;
    const run = await followRun(c, 'k8s', true, (e) => {
      if (e.kind === EventKind.EVENT_KIND_ROUND_STARTED && e.round === 1)
        killed = cluster!.samplers[1]!.stop('SIGKILL');
    });
    c.close();
    await killed;
    expect(run.state, run.message).toBe(RunState.RUN_STATE_SUCCEEDED);
    expect(run.latestCheckpoint!.artifact!.uri).toBe('nats://duel_artifacts/runs/k8s/round-2');
    expect(readFileSync(join(root, 'logs', 'orchestrator.log'), 'utf8')).toMatch(
      /replica failed a shard; moving it/,
    );
  }, 180_000);
});
