/** Small promise helpers over generated grpc-js clients, and a health client. */
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { GrpcServer, type ServiceRegistration } from '../../src/platform/grpc/server.js';
import { createLogger } from '../../src/platform/logger.js';

export type HealthStatus = 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';

export function healthCheck(
  address: string,
  service = '',
  creds: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
): Promise<HealthStatus> {
  const pkg = grpc.loadPackageDefinition(loadSync(healthProtoPath, { enums: String })) as unknown as {
    grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
  };
  type CheckCallback = (err: grpc.ServiceError | null, res: { status: HealthStatus }) => void;
  const client = new pkg.grpc.health.v1.Health(address, creds, {
    // Fail fast instead of retrying a refused handshake until the default deadline.
    'grpc.initial_reconnect_backoff_ms': 100,
  }) as unknown as grpc.Client & {
    check(req: { service: string }, m: grpc.Metadata, o: grpc.CallOptions, cb: CheckCallback): void;
  };
  return new Promise((resolve, reject) =>
    client.check({ service }, new grpc.Metadata(), { deadline: Date.now() + 5_000 }, (err, res) => {
      client.close();
      if (err) reject(err);
      else resolve(res.status);
    }),
  );
}

/** Calls a generated client's unary method and returns its response or rejects with the ServiceError. */
export function unary<Req, Res>(
  method: (req: Req, cb: (err: grpc.ServiceError | null, res: Res) => void) => unknown,
  req: Req,
): Promise<Res> {
  return new Promise((resolve, reject) => method(req, (err, res) => (err ? reject(err) : resolve(res))));
}

export function collect<T>(stream: grpc.ClientReadableStream<T>): Promise<T[]> {
  return new Promise((resolve, reject) => {
    const out: T[] = [];
    stream.on('data', (m: T) => out.push(m));
    stream.on('error', reject);
    stream.on('end', () => resolve(out));
  });
}

/** A GrpcServer on a free loopback port serving `services`, marked SERVING. */
export async function startService(
  services: ServiceRegistration[],
): Promise<{ server: GrpcServer; address: string }> {
  const server = new GrpcServer({ logger: createLogger('test', { level: 'silent' }), services });
  const port = await server.start();
  server.setServing(true);
  return { server, address: `127.0.0.1:${port}` };
}
