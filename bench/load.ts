/**
 * `duel bench load`: the sampler and the scorer under many concurrent clients, as separate
 * processes over loopback gRPC with the testbed's model sizes (random weights). Three phases:
 *   steady:   `streams` clients call Sample (one service) or Compare (the other) back to back for
 *             `seconds`; every answer's latency and status is recorded (goal: no errors);
 *   overload: `overloadStreams` clients, more than the admission queue holds: the surplus must be
 *             refused with RESOURCE_EXHAUSTED, quickly, and memory must not grow with the flood;
 *   soak:     both services under `streams` clients for `soakSeconds`, resident memory sampled
 *             every second (goal: flat after warm-up).
 * The peer measured in the same run is an idle service's memory and a single client's latency.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { ServiceProcess } from '../src/client/local-cluster.js';
import { codeName, DuelError } from '../src/errors.js';
import type { ModelRef } from '../src/gen/duel/v1/common.js';
import { PolicySamplerServiceClient, type SampleRequest } from '../src/gen/duel/v1/sampler.js';
import { type CompareRequest, PreferenceScorerServiceClient, ProbMode } from '../src/gen/duel/v1/scorer.js';
import { rng } from '../src/models/common/rng.js';
import { writeManifest } from '../src/platform/artifacts.js';
import { callServerStream, callUnary } from '../src/platform/grpc/client.js';
import { drawPrompts } from '../src/testbed/corpus.js';
import { maxNewTokens, parseGame, promptIds } from '../src/testbed/game.js';
import { benchModels } from './round-overhead.js';

const GAME = parseGame({});

export interface LoadOptions {
  streams: number;
  seconds: number;
  overloadStreams: number;
  overloadSeconds: number;
  soakSeconds: number;
  /** Prompts per call; each gets `k` completions (Sample) or `k` candidates (Compare). */
  prompts: number;
  k: number;
  log: (line: string) => void;
}

export interface Latencies {
  calls: number;
  ok: number;
  /** Answers by gRPC status name. */
  codes: Record<string, number>;
  p50_ms: number;
  p99_ms: number;
  /** Successful calls per second. */
  per_s: number;
  /** p50 / p99 of the refusals alone (RESOURCE_EXHAUSTED), when any. */
  refused_p50_ms?: number;
  refused_p99_ms?: number;
}

export interface Memory {
  /** Resident set size in MiB: idle (models loaded, no clients), then over the phase. */
  idle_mib: number;
  max_mib: number;
  end_mib: number;
  /** Least-squares slope of RSS after the first fifth of the phase, MiB per minute. */
  slope_mib_per_min: number;
}

export interface LoadReport {
  streams: number;
  single: { sample: Latencies; compare: Latencies };
  steady: { sample: Latencies; compare: Latencies };
  overload: { sample: Latencies & Memory; compare: Latencies & Memory; streams: number };
  soak: { seconds: number; sample: Latencies & Memory; compare: Latencies & Memory };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pct = (xs: number[], p: number) =>
  xs.length === 0
    ? Number.NaN
    : [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

/** Least-squares slope of y over x. */
function slope(points: [number, number][]): number {
  const n = points.length;
  if (n < 2) return 0;
  const mx = points.reduce((a, [x]) => a + x, 0) / n;
  const my = points.reduce((a, [, y]) => a + y, 0) / n;
  const sxy = points.reduce((a, [x, y]) => a + (x - mx) * (y - my), 0);
  const sxx = points.reduce((a, [x]) => a + (x - mx) ** 2, 0);
  return sxx === 0 ? 0 : sxy / sxx;
}

/** `streams` clients calling `call` back to back for `ms`; latencies by outcome. */
async function hammer(
  streams: number,
  ms: number,
  call: (i: number) => Promise<unknown>,
): Promise<Latencies> {
  const ok: number[] = [];
  const refused: number[] = [];
  const codes: Record<string, number> = {};
  const until = Date.now() + ms;
  const t0 = Date.now();
  await Promise.all(
    Array.from({ length: streams }, async (_, s) => {
      for (let i = 0; Date.now() < until; i++) {
        const start = performance.now();
        let code = 'OK';
        try {
          await call(s * 1_000_003 + i);
        } catch (e) {
          code = codeName(DuelError.from(e).code);
        }
        const took = performance.now() - start;
        codes[code] = (codes[code] ?? 0) + 1;
        if (code === 'OK') ok.push(took);
        else if (code === 'RESOURCE_EXHAUSTED') {
          refused.push(took);
          // A refused client backs off briefly, as a real one would, instead of spinning.
          await sleep(20);
        }
      }
    }),
  );
  return {
    calls: Object.values(codes).reduce((a, b) => a + b, 0),
    ok: ok.length,
    codes,
    p50_ms: pct(ok, 0.5),
    p99_ms: pct(ok, 0.99),
    per_s: ok.length / ((Date.now() - t0) / 1000),
    ...(refused.length > 0 ? { refused_p50_ms: pct(refused, 0.5), refused_p99_ms: pct(refused, 0.99) } : {}),
  };
}

/** Runs `work` while sampling `pid`'s RSS every second. */
async function withMemory<T>(pid: number, idle: number, work: Promise<T>): Promise<T & Memory> {
  const t0 = Date.now();
  const samples: [number, number][] = [];
  let done = false;
  const sampler = (async () => {
    while (!done) {
      samples.push([(Date.now() - t0) / 60_000, rssMiB(pid)]);
      await sleep(1000);
    }
  })();
  const r = await work;
  done = true;
  await sampler;
  samples.push([(Date.now() - t0) / 60_000, rssMiB(pid)]);
  const settled = samples.slice(Math.floor(samples.length / 5));
  return {
    ...r,
    idle_mib: idle,
    max_mib: Math.max(...samples.map(([, y]) => y)),
    end_mib: samples[samples.length - 1]![1],
    slope_mib_per_min: slope(settled),
  };
}

export async function runLoadBench(o: LoadOptions): Promise<LoadReport> {
  const root = mkdtempSync(join(tmpdir(), 'duel-bench-load-'));
  const dirs = benchModels(root);
  const ref = (dir: string): ModelRef => ({
    artifact: { uri: `file://${dir}`, sha256: writeManifest(dir) },
    adapter: undefined,
    name: '',
  });
  const policy = ref(dirs.policy);
  const judge = ref(dirs.judge);
  const env = { DUEL_LOG_LEVEL: 'warn', DUEL_ARTIFACTS_ROOT: join(root, 'artifacts') };
  const sampler = new ServiceProcess('sampler', 'sampler', env, undefined);
  const scorer = new ServiceProcess('scorer', 'scorer', env, undefined);
  await Promise.all([sampler.start(), scorer.start()]);
  const sc = new PolicySamplerServiceClient(sampler.address, grpc.credentials.createInsecure());
  const jc = new PreferenceScorerServiceClient(scorer.address, grpc.credentials.createInsecure());
  try {
    const targets = drawPrompts(GAME, 512, 3);
    const draw = rng(5);
    const letters = Array.from({ length: 16 }, (_, i) => i + 4);
    const sample = (i: number) => {
      const req: SampleRequest = {
        model: policy,
        prompts: Array.from({ length: o.prompts }, (_, p) => ({
          tokenIds: promptIds(targets[(i + p) % targets.length]!),
          text: '',
          id: '',
        })),
        params: { numSamples: o.k, maxNewTokens: maxNewTokens(GAME), temperature: 1, topK: 0, seed: i },
        mixtureReference: undefined,
        mixtureCoef: 0,
      };
      return callServerStream(sc, sc.sample, req, { deadlineMs: 60_000 }, 'Sample');
    };
    const compare = (i: number) => {
      const req: CompareRequest = {
        judge,
        items: Array.from({ length: o.prompts }, (_, p) => ({
          prompt: { tokenIds: promptIds(targets[(i + p) % targets.length]!), text: '', id: '' },
          candidates: Array.from({ length: o.k }, () => ({
            tokenIds: Array.from(
              { length: 1 + Math.floor(draw() * 5) },
              () => letters[Math.floor(draw() * 16)]!,
            ),
            text: '',
            tokenLogprobs: [],
            logprob: 0,
            source: 0,
            finished: true,
          })),
        })),
        probMode: ProbMode.PROB_MODE_PAIRWISE,
      };
      return callUnary(jc, jc.compare, req, { deadlineMs: 60_000 }, 'Compare');
    };
    // Warm-up: models loaded and graphs compiled before anything is timed.
    await sample(0);
    await compare(0);
    await sleep(1000);
    const idle = { sample: rssMiB(sampler.child.pid!), compare: rssMiB(scorer.child.pid!) };

    o.log(`single client, ${Math.min(10, o.seconds)} s each`);
    const single = {
      sample: await hammer(1, Math.min(10, o.seconds) * 1000, sample),
      compare: await hammer(1, Math.min(10, o.seconds) * 1000, compare),
    };
    o.log(`steady: ${o.streams} streams, ${o.seconds} s each`);
    const steady = {
      sample: await hammer(o.streams, o.seconds * 1000, sample),
      compare: await hammer(o.streams, o.seconds * 1000, compare),
    };
    o.log(`overload: ${o.overloadStreams} streams, ${o.overloadSeconds} s each`);
    const overload = {
      streams: o.overloadStreams,
      sample: await withMemory(
        sampler.child.pid!,
        idle.sample,
        hammer(o.overloadStreams, o.overloadSeconds * 1000, sample),
      ),
      compare: await withMemory(
        scorer.child.pid!,
        idle.compare,
        hammer(o.overloadStreams, o.overloadSeconds * 1000, compare),
      ),
    };
    o.log(`soak: ${o.streams} streams on both services, ${o.soakSeconds} s`);
    const [soakSample, soakCompare] = await Promise.all([
      withMemory(sampler.child.pid!, idle.sample, hammer(o.streams, o.soakSeconds * 1000, sample)),
      withMemory(scorer.child.pid!, idle.compare, hammer(o.streams, o.soakSeconds * 1000, compare)),
    ]);
    return {
      streams: o.streams,
      single,
      steady,
      overload,
      soak: { seconds: o.soakSeconds, sample: soakSample, compare: soakCompare },
    };
  } finally {
    sc.close();
    jc.close();
    await Promise.all([sampler.stop(), scorer.stop()]);
    rmSync(root, { recursive: true, force: true });
  }
}
