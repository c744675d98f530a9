/**
 * Prometheus metrics of a service (prom-client): gRPC calls handled by method and code, their
 * latency by method, and the service's domain counters; served as text on a separate HTTP port
 * at /metrics so scraping never competes with the gRPC port. prom-client (with the OpenTelemetry
 * API it imports) is a fair share of a service's cold start, so it loads after the service is
 * serving (`load`); what is observed before is kept and replayed, so nothing is lost.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import type * as Prom from 'prom-client';

export type RpcObserver = (method: string, code: string, seconds: number) => void;

export class ServiceMetrics {
  private loaded: PromMetrics | undefined;
  private loading: Promise<PromMetrics> | undefined;
  private readonly waiting: ((m: PromMetrics) => void)[] = [];

  constructor(readonly service: string) {}

  /** Loads prom-client and replays what was observed so far; every later call is recorded at once. */
  load(): Promise<PromMetrics> {
    this.loading ??= (async () => {
      // After the current turn: a caller about to report SERVING does so first.
      await new Promise((resolve) => setImmediate(resolve));
      // Required from node_modules at run time (the bundle leaves it out, and an ES import of this
      // CommonJS package through the bundle would not expose its named exports).
      const prom = createRequire(import.meta.url)('prom-client') as typeof Prom;
      const m = new PromMetrics(prom, this.service);
      for (const record of this.waiting.splice(0)) record(m);
      this.loaded = m;
      return m;
    })();
    return this.loading;
  }

  private record(f: (m: PromMetrics) => void): void {
    if (this.loaded) f(this.loaded);
    else this.waiting.push(f);
  }

  /** For GrpcServer: one observation per completed call. */
  readonly observe: RpcObserver = (method, code, seconds) =>
    this.record((m) => m.observe(method, code, seconds));

  /** A domain counter (tokens generated, pairs judged, training steps, ...), created on first use. */
  count(name: string, help: string, by = 1): void {
    this.record((m) => m.count(name, help, by));
  }

  /** A domain duration histogram in seconds (round and stage times), created on first use. */
  seconds(name: string, help: string, seconds: number, stage?: string): void {
    this.record((m) => m.seconds(name, help, seconds, stage));
  }

  /** A domain gauge (runs this orchestrator drives, ...), created on first use, set to `value`. */
  gauge(name: string, help: string, value: number): void {
    this.record((m) => m.gauge(name, help, value));
  }

  /** A short duration histogram in seconds (an optimizer step), with the gRPC latency's buckets. */
  latency(name: string, help: string, seconds: number): void {
    this.record((m) => m.latency(name, help, seconds));
  }

  /**
   * A gauge read when scraped (a queue's depth, the sessions held): `read` runs at each scrape,
   * so the value is never stale and costs nothing between scrapes.
   */
  sampled(name: string, help: string, read: () => number): void {
    this.record((m) => m.sampled(name, help, read));
  }

  /** The Prometheus text exposition of everything recorded. */
  async text(): Promise<string> {
    return (await this.load()).registry.metrics();
  }

  /**
   * Serves /metrics on host:port (0 picks a free port), and what `pages` answers (a role's own
   * pages); resolves to the bound port.
   */
  async serve(
    host: string,
    port: number,
    pages?: (req: IncomingMessage, res: ServerResponse) => boolean,
  ): Promise<{ server: Server; port: number }> {
    const { registry } = await this.load();
    const server = createServer((req, res) => {
      if (req.url !== '/metrics') {
        if (pages?.(req, res)) return;
        res.writeHead(404).end();
        return;
      }
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (err: Error) => res.writeHead(500).end(err.message),
      );
    });
    await new Promise<void>((resolve) => server.listen(port, host, resolve));
    const address = server.address();
    return { server, port: typeof address === 'object' && address ? address.port : port };
  }
}

/** Buckets for calls and steps: a millisecond to five minutes. */
const LATENCY_BUCKETS = [0.001, 0.005, 0.02, 0.1, 0.5, 2, 10, 60, 300];

/** The prom-client registry and metrics behind ServiceMetrics. */
class PromMetrics {
  readonly registry: Prom.Registry;
  private readonly handled: Prom.Counter<'method' | 'code'>;
  private readonly rpcLatency: Prom.Histogram<'method'>;
  private readonly latencies = new Map<string, Prom.Histogram>();
  private readonly counters = new Map<string, Prom.Counter>();
  private readonly durations = new Map<string, Prom.Histogram<'stage'>>();
  private readonly gauges = new Map<string, Prom.Gauge>();

  constructor(
    private readonly prom: typeof Prom,
    service: string,
  ) {
    this.registry = new prom.Registry();
    this.registry.setDefaultLabels({ service });
    prom.collectDefaultMetrics({ register: this.registry, prefix: 'duel_' });
    this.handled = new prom.Counter({
      name: 'duel_grpc_server_handled_total',
      help: 'gRPC calls completed, by method and status code',
      labelNames: ['method', 'code'],
      registers: [this.registry],
    });
    this.rpcLatency = new prom.Histogram({
      name: 'duel_grpc_server_handling_seconds',
      help: 'gRPC call latency, by method',
      labelNames: ['method'],
      buckets: LATENCY_BUCKETS,
      registers: [this.registry],
    });
  }

  observe(method: string, code: string, seconds: number): void {
    this.handled.inc({ method, code });
    this.rpcLatency.observe({ method }, seconds);
  }

  /** A domain counter (tokens generated, pairs judged, training steps, ...), created on first use. */
  count(name: string, help: string, by = 1): void {
    let c = this.counters.get(name);
    if (!c) {
      c = new this.prom.Counter({ name, help, registers: [this.registry] });
      this.counters.set(name, c);
    }
    c.inc(by);
  }

  gauge(name: string, help: string, value: number): void {
    let g = this.gauges.get(name);
    if (!g) {
      g = new this.prom.Gauge({ name, help, registers: [this.registry] });
      this.gauges.set(name, g);
    }
    g.set(value);
  }

  latency(name: string, help: string, seconds: number): void {
    let h = this.latencies.get(name);
    if (!h) {
      h = new this.prom.Histogram({ name, help, buckets: LATENCY_BUCKETS, registers: [this.registry] });
      this.latencies.set(name, h);
    }
    h.observe(seconds);
  }

  sampled(name: string, help: string, read: () => number): void {
    if (this.gauges.has(name)) throw new Error(`metrics: gauge ${name} is registered twice`);
    this.gauges.set(
      name,
      new this.prom.Gauge({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.set(read());
        },
      }),
    );
  }

  /** A domain duration histogram in seconds (round and stage times), created on first use. */
  seconds(name: string, help: string, seconds: number, stage?: string): void {
    let h = this.durations.get(name);
    if (!h) {
      h = new this.prom.Histogram({
        name,
        help,
        labelNames: ['stage'],
        buckets: [0.1, 0.5, 2, 10, 60, 300, 1800, 7200, 21600],
        registers: [this.registry],
      });
      this.durations.set(name, h);
    }
    if (stage === undefined) h.observe(seconds);
    else h.observe({ stage }, seconds);
  }
}
