/**
 * Prometheus metrics of a service (prom-client): gRPC calls handled by method and code, their
 * latency by method, and the service's domain counters; served as text on a separate HTTP port
 * at /metrics so scraping never competes with the gRPC port.
 */
import { createServer, type Server } from 'node:http';
import { Counter, collectDefaultMetrics, Histogram, Registry } from 'prom-client';

export type RpcObserver = (method: string, code: string, seconds: number) => void;

export class ServiceMetrics {
  readonly registry = new Registry();
  private readonly handled: Counter<'method' | 'code'>;
  private readonly latency: Histogram<'method'>;
  private readonly counters = new Map<string, Counter>();
  private readonly durations = new Map<string, Histogram<'stage'>>();

  constructor(readonly service: string) {
    this.registry.setDefaultLabels({ service });
    collectDefaultMetrics({ register: this.registry, prefix: 'duel_' });
    this.handled = new Counter({
      name: 'duel_grpc_server_handled_total',
      help: 'gRPC calls completed, by method and status code',
      labelNames: ['method', 'code'],
      registers: [this.registry],
    });
    this.latency = new Histogram({
      name: 'duel_grpc_server_handling_seconds',
      help: 'gRPC call latency, by method',
      labelNames: ['method'],
      buckets: [0.001, 0.005, 0.02, 0.1, 0.5, 2, 10, 60, 300],
      registers: [this.registry],
    });
  }

  /** For GrpcServer: one observation per completed call. */
  readonly observe: RpcObserver = (method, code, seconds) => {
    this.handled.inc({ method, code });
    this.latency.observe({ method }, seconds);
  };

  /** A domain counter (tokens generated, pairs judged, training steps, ...), created on first use. */
  count(name: string, help: string, by = 1): void {
    let c = this.counters.get(name);
    if (!c) {
      c = new Counter({ name, help, registers: [this.registry] });
      this.counters.set(name, c);
    }
    c.inc(by);
  }

  /** A domain duration histogram in seconds (round and stage times), created on first use. */
  seconds(name: string, help: string, seconds: number, stage?: string): void {
    let h = this.durations.get(name);
    if (!h) {
      h = new Histogram({
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

  /** Serves /metrics on host:port (0 picks a free port); resolves to the bound port. */
  async serve(host: string, port: number): Promise<{ server: Server; port: number }> {
    const server = createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end();
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        (err: Error) => res.writeHead(500).end(err.message),
      );
    });
    await new Promise<void>((resolve) => server.listen(port, host, resolve));
    const address = server.address();
    return { server, port: typeof address === 'object' && address ? address.port : port };
  }
}
