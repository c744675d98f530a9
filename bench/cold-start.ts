/**
 * `duel bench cold-start`: milliseconds from spawning `duel serve <role>` to the process serving
 * (it prints "listening" only after its health is SERVING), for every role without a model, and
 * for the sampler preloading a testbed-sized model, each started as the images start it (from V8's
 * code cache, src/cli/serve-launcher.ts) and three roles also without the cache (dist/bin/main.js);
 * beside them, a bare `node` process started and exited, the floor any Node service pays.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Role, ServiceProcess } from '../src/client/local-cluster.js';
import { parseLlamaConfig } from '../src/models/llama/config.js';
import { initLlamaWeights } from '../src/models/llama/weights.js';
import { saveModelDir } from '../src/models/model-dir.js';
import { writeManifest } from '../src/platform/artifacts.js';
import { NatsServer } from '../src/platform/nats-server.js';
import { median } from './measure.js';

async function timeStart(role: Role, env: NodeJS.ProcessEnv, withoutCodeCache: boolean): Promise<number> {
  const p = new ServiceProcess(role, role, { DUEL_LOG_LEVEL: 'warn', ...env }, undefined, withoutCodeCache);
  const t0 = performance.now();
  await p.start();
  const ms = performance.now() - t0;
  await p.stop();
  return ms;
}

export async function runColdStartBench(o: { repeats: number; log: (l: string) => void }) {
  const root = mkdtempSync(join(tmpdir(), 'duel-cold-'));
  const nats = await NatsServer.start();
  try {
    const node: number[] = [];
    for (let i = 0; i < o.repeats; i++) {
      const t0 = performance.now();
      spawnSync(process.execPath, ['-e', '0']);
      node.push(performance.now() - t0);
    }
    const cfg = parseLlamaConfig({
      model_type: 'llama',
      vocab_size: 22,
      hidden_size: 64,
      intermediate_size: 128,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      max_position_embeddings: 16,
    });
    const model = join(root, 'model');
    saveModelDir(model, cfg, initLlamaWeights(cfg, 1));
    const digest = writeManifest(model);
    const base = { DUEL_NATS_URL: nats.url, DUEL_ARTIFACTS_ROOT: join(root, 'artifacts') };
    const orchestratorEnv = {
      ...base,
      DUEL_ORCHESTRATOR_SAMPLERS: '127.0.0.1:1',
      DUEL_ORCHESTRATOR_SCORERS: '127.0.0.1:1',
      DUEL_ORCHESTRATOR_TRAINER: '127.0.0.1:1',
    };
    const cases: { name: string; role: Role; env: NodeJS.ProcessEnv; withoutCodeCache?: boolean }[] = [
      { name: 'sampler', role: 'sampler', env: base },
      { name: 'scorer', role: 'scorer', env: base },
      { name: 'trainer', role: 'trainer', env: base },
      { name: 'orchestrator', role: 'orchestrator', env: orchestratorEnv },
      ...(['sampler', 'trainer', 'orchestrator'] as const).map((role) => ({
        name: `${role}, without the code cache`,
        role,
        env: role === 'orchestrator' ? orchestratorEnv : base,
        withoutCodeCache: true,
      })),
      {
        name: 'sampler + testbed model',
        role: 'sampler',
        env: { ...base, DUEL_MODELS_PRELOAD: `file://${model}#${digest}` },
      },
    ];
    const rows: { name: string; ms: number }[] = [{ name: 'node -e 0 (peer)', ms: median(node) }];
    for (const c of cases) {
      const times: number[] = [];
      for (let i = 0; i < o.repeats; i++)
        times.push(await timeStart(c.role, c.env, c.withoutCodeCache ?? false));
      rows.push({ name: c.name, ms: median(times) });
      o.log(`${c.name}: ${times.map((t) => t.toFixed(0)).join(', ')} ms`);
    }
    return { repeats: o.repeats, rows };
  } finally {
    await nats.stop();
    rmSync(root, { recursive: true, force: true });
  }
}
