/**
 * A nats-server of our own with JetStream: on a free loopback port, its store in a temporary
 * directory removed on stop. Used by `duel run --local`, `duel demo` and the integration tests, so
 * none of them depends on (or disturbs) a server already running on the machine.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { DuelError } from '../errors.js';

/** nats-server on PATH, or Debian's /usr/sbin/nats-server (not on a non-root PATH). */
export function findNatsServer(): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/local/sbin'];
  for (const d of dirs) {
    const p = join(d, 'nats-server');
    if (d && existsSync(p)) return p;
  }
  return undefined;
}

/**
 * A loopback port free now, for a process started next to listen on. It is drawn below the
 * kernel's ephemeral range (ip_local_port_range), because a port the kernel handed out for
 * `listen(0)` is free again as soon as it is released here, and the kernel may hand it to the very
 * next `listen(0)` — another service starting meanwhile, or the same one's gRPC server (a test's
 * orchestrator once found its HTTP port taken by its own gRPC listener so).
 */
export async function freePort(): Promise<number> {
  const low = ephemeralLow();
  for (let tries = 0; tries < 32; tries++) {
    const port = 10_000 + Math.floor(Math.random() * (low - 10_000));
    if (await listens(port)) return port;
  }
  const any = await listens(0);
  if (!any) throw new Error('no free port on 127.0.0.1');
  return any;
}

/** The first port of the kernel's ephemeral range (Linux's default 32768 where it cannot be read). */
function ephemeralLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 11_000 ? low : 32_768;
  } catch {
    return 32_768;
  }
}

/** Listens on `port` of 127.0.0.1 and closes again: the port (0: the kernel's pick), or 0 if taken. */
function listens(port: number): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(0));
    s.listen(port, '127.0.0.1', () => {
      const bound = (s.address() as { port: number }).port;
      s.close(() => resolve(bound));
    });
  });
}

async function waitForPort(port: number, child: ChildProcess, timeoutMs: number): Promise<void> {
  const { connect } = await import('node:net');
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw DuelError.unavailable(`nats-server exited with ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const sock = connect(port, '127.0.0.1', () => {
        sock.destroy();
        resolve(true);
      });
      sock.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until)
      throw DuelError.unavailable(`nats-server did not listen on ${port} in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export class NatsServer {
  private constructor(
    readonly url: string,
    readonly port: number,
    private child: ChildProcess,
    readonly storeDir: string,
    private readonly binary: string,
    private readonly ownsStore: boolean,
    private readonly extraArgs: string[] = [],
  ) {}

  /** Starts one; `storeDir` keeps JetStream's data across restarts (a temporary one otherwise). */
  static async start(
    options: {
      port?: number;
      storeDir?: string /** A nats-server config file (auth, TLS). */;
      configFile?: string;
      /** A member of a cluster: its name in it, its route port, and every member's route port. */
      cluster?: { serverName: string; port: number; routes: number[] };
    } = {},
  ): Promise<NatsServer> {
    const binary = findNatsServer();
    if (!binary)
      throw DuelError.failedPrecondition(
        'nats-server is not installed (apt-get install nats-server, or run scripts/setup.sh)',
      );
    const port = options.port ?? (await freePort());
    const storeDir = options.storeDir ?? mkdtempSync(join(tmpdir(), 'duel-nats-'));
    const c = options.cluster;
    const extra = [
      ...(options.configFile ? ['-c', options.configFile] : []),
      ...(c
        ? [
            '--server_name',
            c.serverName,
            '--cluster_name',
            'duel',
            '--cluster',
            `nats://127.0.0.1:${c.port}`,
            '--routes',
            c.routes.map((p) => `nats://127.0.0.1:${p}`).join(','),
          ]
        : []),
    ];
    const child = NatsServer.spawn(binary, port, storeDir, extra);
    const server = new NatsServer(
      `nats://127.0.0.1:${port}`,
      port,
      child,
      storeDir,
      binary,
      !options.storeDir,
      extra,
    );
    await waitForPort(port, child, 10_000);
    return server;
  }

  private static spawn(binary: string, port: number, storeDir: string, extra: string[]): ChildProcess {
    // Flags after -c override the file's listen address, port and store.
    return spawn(binary, [...extra, '-js', '-a', '127.0.0.1', '-p', String(port), '-sd', storeDir], {
      stdio: 'ignore',
    });
  }

  /**
   * A JetStream cluster of `size` servers on loopback, routed to each other (nats-server 2.9 needs
   * a server name and a cluster name for JetStream in a cluster); resolves once a client can use
   * JetStream through it (a meta leader is elected). `url` lists every member.
   */
  static async cluster(size = 3): Promise<NatsCluster> {
    const routes = await Promise.all(Array.from({ length: size }, () => freePort()));
    const servers = await Promise.all(
      routes.map((port, i) => NatsServer.start({ cluster: { serverName: `n${i + 1}`, port, routes } })),
    );
    const cluster = new NatsCluster(servers);
    await cluster.ready();
    return cluster;
  }

  /** Kills the server (SIGKILL when `hard`) and starts it again on the same port and store. */
  async restart(hard = false): Promise<void> {
    await this.kill(hard ? 'SIGKILL' : 'SIGTERM');
    await this.revive();
  }

  /** SIGKILLs the server and leaves it down (`revive` starts it again on its port and store). */
  crash(): Promise<void> {
    return this.kill('SIGKILL');
  }

  async revive(): Promise<void> {
    this.child = NatsServer.spawn(this.binary, this.port, this.storeDir, this.extraArgs);
    await waitForPort(this.port, this.child, 10_000);
  }

  private kill(signal: NodeJS.Signals): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      this.child.once('exit', () => resolve());
      this.child.kill(signal);
    });
  }

  async stop(): Promise<void> {
    await this.kill('SIGTERM');
    if (this.ownsStore) rmSync(this.storeDir, { recursive: true, force: true });
  }
}

/** A JetStream cluster of NatsServers (NatsServer.cluster). */
export class NatsCluster {
  constructor(readonly servers: NatsServer[]) {}

  /** Every member's URL, comma-separated, as `nats.url` takes a cluster. */
  get url(): string {
    return this.servers.map((s) => s.url).join(',');
  }

  /** The member whose `--server_name` is `name` (what JetStream names a stream's leader by). */
  byName(name: string): NatsServer {
    const i = Number(/^n(\d+)$/.exec(name)?.[1] ?? 0) - 1;
    const s = this.servers[i];
    if (!s) throw new Error(`no server '${name}' in this cluster`);
    return s;
  }

  /** Waits until JetStream answers through the cluster (its meta leader elected). */
  async ready(timeoutMs = 20_000): Promise<void> {
    const { connectNats } = await import('./nats.js');
    const nc = await connectNats(this.url, 'duel-cluster-ready');
    try {
      for (const until = Date.now() + timeoutMs; ; await new Promise((r) => setTimeout(r, 200))) {
        try {
          await (await nc.jetstreamManager()).getAccountInfo();
          return;
        } catch (e) {
          if (Date.now() > until)
            throw DuelError.unavailable(`the NATS cluster has no JetStream: ${(e as Error).message}`);
        }
      }
    } finally {
      await nc.close();
    }
  }

  async stop(): Promise<void> {
    await Promise.all(this.servers.map((s) => s.stop()));
  }
}
