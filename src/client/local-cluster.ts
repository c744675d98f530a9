/**
 * The whole suite on one machine as separate OS processes: a nats-server of its own (unless a URL
 * is given, or none is installed: then the orchestrator's in-process bus), N samplers, M scorers,
 * the trainer and the orchestrator, each `duel serve <role>` on a free loopback port and configured
 * only through DUEL_* environment variables, exactly as a container would be. `duel run --local`, `duel demo` and the end-to-end tests start it; tests
 * also kill and restart its processes.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { DuelError } from '../errors.js';
import { MEMORY_BUS_URL } from '../platform/bus.js';
import { findNatsServer, freePort, NatsServer } from '../platform/nats-server.js';
import { duelBin, duelServeBin } from '../platform/paths.js';

const SERVE_BIN = duelServeBin();

export type Role = 'sampler' | 'scorer' | 'trainer' | 'orchestrator';

export class ServiceProcess {
  child!: ChildProcess;
  address = '';
  private log: WriteStream | undefined;

  constructor(
    readonly role: Role,
    readonly name: string,
    private readonly env: NodeJS.ProcessEnv,
    private readonly logDir: string | undefined,
    /** `duel serve` without the code cache (dist/bin/main.js), for comparing starts. */
    private readonly withoutCodeCache = false,
    /** CPUs the process may run on (`taskset -c` syntax, e.g. "0" or "2-3"); default: any. */
    private readonly cpus?: string,
  ) {}

  /** Spawns `duel serve <role>` (on the port it had, when restarting) and waits until it serves. */
  async start(timeoutMs = 60_000): Promise<void> {
    const port = this.address ? this.address.split(':').pop()! : '0';
    this.log ??= this.logDir
      ? createWriteStream(join(this.logDir, `${this.name}.log`), { flags: 'a' })
      : undefined;
    // `duel serve` from V8's code cache (src/cli/serve-launcher.ts), as the images start it.
    const argv = this.withoutCodeCache ? [duelBin(), 'serve'] : [SERVE_BIN];
    const command = [process.execPath, ...argv, this.role, '--port', port];
    if (this.cpus) command.unshift('taskset', '-c', this.cpus);
    const child = spawn(command[0]!, command.slice(1), {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, ...this.env },
    });
    this.child = child;
    let tail = '';
    this.address = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(DuelError.unavailable(`${this.name} did not start in ${timeoutMs} ms`)),
        timeoutMs,
      );
      child.stderr!.on('data', (chunk: Buffer) => {
        this.log?.write(chunk);
        tail = (tail + chunk.toString()).slice(-4000);
        const m = /listening on (\S+)/.exec(tail);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(
          DuelError.unavailable(
            `${this.name} exited (${code ?? signal}) before serving: ${tail.slice(-1500)}`,
          ),
        );
      });
    });
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Sends `signal` and waits for the process to exit. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (!this.running) return this.child?.exitCode ?? null;
    return new Promise((resolve) => {
      this.child.once('exit', (code) => resolve(code));
      this.child.kill(signal);
    });
  }

  closeLog(): void {
    this.log?.end();
  }
}

export interface LocalClusterOptions {
  samplers?: number;
  scorers?: number;
  /** Root of the file:// artifact store the trainer publishes into. */
  artifactsRoot: string;
  /** Use this NATS server instead of starting one. */
  natsUrl?: string | undefined;
  /**
   * Without `natsUrl`: `nats` starts a nats-server, `memory` uses the orchestrator's in-process
   * bus, `auto` (the default) starts one when installed and falls back to the in-process bus.
   */
  bus?: 'auto' | 'nats' | 'memory';
  /** Each service's log in <logDir>/<name>.log. */
  logDir?: string | undefined;
  /** Extra DUEL_* settings for every service. */
  env?: NodeJS.ProcessEnv;
  /** Extra settings for every process of one role (after `env`). */
  roleEnv?: Partial<Record<Role, NodeJS.ProcessEnv>>;
  /**
   * CPUs each role's processes run on (`taskset -c` syntax): for measuring what overlapping
   * stages gain when sampling and training have cores of their own. Default: any.
   */
  cpus?: Partial<Record<Role, string>>;
}

export class LocalCluster {
  private constructor(
    readonly nats: NatsServer | undefined,
    readonly natsUrl: string,
    readonly samplers: ServiceProcess[],
    readonly scorers: ServiceProcess[],
    readonly trainer: ServiceProcess,
    readonly orchestrator: ServiceProcess,
    private readonly makeOrchestrator: (name: string, env: NodeJS.ProcessEnv) => Promise<ServiceProcess>,
  ) {}

  /** Another orchestrator replica over the same workers and NATS (started; stopped by `stop`). */
  async addOrchestrator(name: string, env: NodeJS.ProcessEnv = {}): Promise<ServiceProcess> {
    const o = await this.makeOrchestrator(name, env);
    this.replicas.push(o);
    await o.start();
    return o;
  }

  private readonly replicas: ServiceProcess[] = [];

  /** `nats` (a server, ours or given) or `memory` (the orchestrator's in-process bus). */
  get bus(): 'nats' | 'memory' {
    return this.natsUrl === MEMORY_BUS_URL ? 'memory' : 'nats';
  }

  static async start(o: LocalClusterOptions): Promise<LocalCluster> {
    if (o.logDir) mkdirSync(o.logDir, { recursive: true });
    const bus = o.bus ?? 'auto';
    const memory = !o.natsUrl && (bus === 'memory' || (bus === 'auto' && !findNatsServer()));
    const nats = o.natsUrl || memory ? undefined : await NatsServer.start();
    const natsUrl = o.natsUrl ?? nats?.url ?? MEMORY_BUS_URL;
    const base: NodeJS.ProcessEnv = {
      DUEL_LOG_LEVEL: 'info',
      DUEL_NATS_URL: natsUrl,
      DUEL_ARTIFACTS_ROOT: o.artifactsRoot,
      ...o.env,
    };
    const make = (role: Role, name: string, env: NodeJS.ProcessEnv = {}) =>
      new ServiceProcess(
        role,
        name,
        { ...base, ...o.roleEnv?.[role], ...env },
        o.logDir,
        false,
        o.cpus?.[role],
      );
    const samplers = Array.from({ length: o.samplers ?? 1 }, (_, i) => make('sampler', `sampler-${i}`));
    const scorers = Array.from({ length: o.scorers ?? 1 }, (_, i) => make('scorer', `scorer-${i}`));
    // Its name is its trainer.id: restarted, it takes its training sessions back at once.
    const trainer = make('trainer', 'trainer', { DUEL_TRAINER_ID: 'trainer' });
    const started: ServiceProcess[] = [];
    try {
      await Promise.all(
        [...samplers, ...scorers, trainer].map(async (s) => {
          await s.start();
          started.push(s);
        }),
      );
      const workers = {
        DUEL_ORCHESTRATOR_SAMPLERS: samplers.map((s) => s.address).join(','),
        DUEL_ORCHESTRATOR_SCORERS: scorers.map((s) => s.address).join(','),
        DUEL_ORCHESTRATOR_TRAINER: trainer.address,
      };
      // The process name is the replica's lease id: a restarted orchestrator resumes its runs at
      // once, as a Kubernetes pod restarted in place (same pod name) does.
      // An HTTP port of its own, for /metrics and the live run pages, unless the caller chose one.
      const httpPort = async (env: NodeJS.ProcessEnv = {}) =>
        env.DUEL_METRICS_PORT ?? o.roleEnv?.orchestrator?.DUEL_METRICS_PORT ?? String(await freePort());
      const orchestrator = make('orchestrator', 'orchestrator', {
        ...workers,
        DUEL_ORCHESTRATOR_ID: 'orchestrator',
        DUEL_METRICS_PORT: await httpPort(),
      });
      await orchestrator.start();
      return new LocalCluster(nats, natsUrl, samplers, scorers, trainer, orchestrator, async (name, env) =>
        make('orchestrator', name, {
          ...workers,
          DUEL_ORCHESTRATOR_ID: name,
          ...env,
          DUEL_METRICS_PORT: await httpPort(env),
        }),
      );
    } catch (e) {
      await Promise.all(started.map((s) => s.stop('SIGKILL')));
      await nats?.stop();
      throw e;
    }
  }

  get all(): ServiceProcess[] {
    return [...this.samplers, ...this.scorers, this.trainer, this.orchestrator];
  }

  /** SIGTERM to every service (orchestrators first, so they stop calling the others), then NATS. */
  async stop(): Promise<void> {
    await Promise.all([this.orchestrator, ...this.replicas].map((o) => o.stop()));
    for (const o of this.replicas) o.closeLog();
    await Promise.all(this.all.map((s) => s.stop()));
    for (const s of this.all) s.closeLog();
    await this.nats?.stop();
  }
}
