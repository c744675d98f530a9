/**
 * The gRPC server every duel service runs on: grpc.health.v1 (NOT_SERVING until the service says
 * it is ready, and again while draining), server reflection over the .proto files shipped in the
 * package, message-size limits, and graceful shutdown (NOT_SERVING → drain in-flight calls for
 * a grace period → force close).
 */
import type { PeerCertificate } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../logger.js';
import { protoRoot } from '../paths.js';
import { adaptHandlers, type ServiceHandlers, tolerantDefinition } from './handlers.js';
import { Health, ServingStatus } from './health.js';

/** The .proto files reflection describes: every duel contract. */
const CONTRACTS = [
  'duel/v1/common.proto',
  'duel/v1/sampler.proto',
  'duel/v1/scorer.proto',
  'duel/v1/trainer.proto',
  'duel/v1/runs.proto',
  'duel/v1/events.proto',
];

export interface ServiceRegistration {
  definition: grpc.ServiceDefinition;
  handlers: object;
}

/** Pairs a generated definition with its handlers, checked against each other at compile time. */
export function service<S extends grpc.ServiceDefinition>(
  definition: S,
  handlers: ServiceHandlers<S>,
): ServiceRegistration {
  return { definition, handlers };
}

export interface GrpcServerOptions {
  logger: Logger;
  services: ServiceRegistration[];
  /** @default '127.0.0.1' — loopback unless configured otherwise. */
  host?: string;
  /** 0 picks a free port. @default 0 */
  port?: number;
  /** Largest message accepted or sent. @default 64 MiB */
  maxMessageBytes?: number;
  /** How long in-flight calls may finish after shutdown begins. @default 10_000 */
  shutdownGraceMs?: number;
  /** @default true */
  reflection?: boolean;
  /** Server credentials. @default insecure (loopback) */
  credentials?: grpc.ServerCredentials;
  /** Called once per completed call with its method, status code name and seconds (metrics). */
  observe?: (method: string, code: string, seconds: number) => void;
  /** Checks each call's client certificate before its handler runs (tls.allowedClients); throws to refuse. */
  authorize?: (peer: PeerCertificate | undefined) => void;
}

export function fullServiceName(definition: grpc.ServiceDefinition): string {
  const first = Object.values(definition)[0] as grpc.MethodDefinition<unknown, unknown> | undefined;
  if (!first) throw new Error('a service definition without methods');
  return first.path.split('/')[1]!;
}

export class GrpcServer {
  readonly server: grpc.Server;
  private readonly health: Health;
  private readonly names: string[];
  private readonly options: Required<Omit<GrpcServerOptions, 'credentials' | 'observe' | 'authorize'>> & {
    credentials: grpc.ServerCredentials;
    observe?: GrpcServerOptions['observe'];
    authorize?: GrpcServerOptions['authorize'];
  };
  private boundPort = 0;
  /**
   * Server reflection parses the contracts' .proto files with protobufjs, a fair share of a
   * service's cold start and a long block of its event loop: it is registered once the service
   * first reports SERVING, so neither its start nor its readiness work waits for a debugging aid.
   * A reflection call before then gets UNIMPLEMENTED. Settles once it is there (or has failed,
   * which is logged).
   */
  reflection: Promise<unknown> | undefined;
  private shuttingDown: Promise<void> | undefined;
  private readonly draining = new AbortController();

  constructor(options: GrpcServerOptions) {
    this.options = {
      host: '127.0.0.1',
      port: 0,
      maxMessageBytes: 64 * 1024 * 1024,
      shutdownGraceMs: 10_000,
      reflection: true,
      credentials: grpc.ServerCredentials.createInsecure(),
      ...options,
    };
    this.server = new grpc.Server({
      'grpc.max_receive_message_length': this.options.maxMessageBytes,
      'grpc.max_send_message_length': this.options.maxMessageBytes,
    });
    this.names = options.services.map((s) => fullServiceName(s.definition));
    this.health = new Health(this.names);
    this.health.addToServer(this.server);
    for (const s of options.services) {
      const impl = adaptHandlers(
        s.definition,
        s.handlers as never,
        this.options.logger,
        this.options.observe,
        this.draining.signal,
        this.options.authorize,
      );
      this.server.addService(tolerantDefinition(s.definition), impl);
    }
  }

  /** Binds and starts; resolves to the bound port. */
  async start(): Promise<number> {
    const address = `${this.options.host.includes(':') ? `[${this.options.host}]` : this.options.host}:${this.options.port}`;
    this.boundPort = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(address, this.options.credentials, (err, port) =>
        err ? reject(err) : resolve(port),
      ),
    );
    this.options.logger.info(
      { address: `${this.options.host}:${this.boundPort}`, services: this.names },
      'grpc listening',
    );
    return this.boundPort;
  }

  private async addReflection(): Promise<void> {
    const [{ loadSync }, { ReflectionService }] = await Promise.all([
      import('@grpc/proto-loader'),
      import('@grpc/reflection'),
    ]);
    const pkg = loadSync(CONTRACTS, { includeDirs: [protoRoot()], keepCase: true });
    new ReflectionService(pkg).addToServer(this.server);
  }

  get port(): number {
    return this.boundPort;
  }

  /** Marks every service (and the server as a whole) SERVING or NOT_SERVING. */
  setServing(serving: boolean): void {
    if (serving && this.options.reflection && !this.reflection)
      this.reflection = this.addReflection().catch((e: Error) =>
        this.options.logger.warn({ err: e.message }, 'server reflection unavailable'),
      );
    for (const name of ['', ...this.names])
      this.health.set(name, serving ? ServingStatus.SERVING : ServingStatus.NOT_SERVING);
  }

  /** NOT_SERVING, then let in-flight calls finish within the grace period, then force close. */
  shutdown(reason = 'shutdown'): Promise<void> {
    this.shuttingDown ??= new Promise<void>((resolve) => {
      this.setServing(false);
      // Watchers have seen NOT_SERVING; their streams would otherwise hold the drain open.
      this.health.endWatches();
      this.options.logger.info({ reason, graceMs: this.options.shutdownGraceMs }, 'draining');
      this.draining.abort();
      const force = setTimeout(() => {
        this.options.logger.warn('grace period over: closing remaining calls');
        this.server.forceShutdown();
        resolve();
      }, this.options.shutdownGraceMs);
      this.server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
    return this.shuttingDown;
  }

  /** On SIGTERM/SIGINT: drain, run `onClosed` (close NATS, workers), exit 0. */
  exitOnSignals(onClosed: () => Promise<void> = async () => {}): void {
    const handle = (signal: NodeJS.Signals) => {
      void this.shutdown(signal)
        .then(onClosed)
        .then(() => {
          this.options.logger.info({ signal }, 'stopped');
          process.exit(0);
        });
    };
    process.once('SIGTERM', handle);
    process.once('SIGINT', handle);
  }
}
