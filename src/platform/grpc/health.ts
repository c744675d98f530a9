/**
 * grpc.health.v1 (Check, Watch, List) on the contract's generated code. grpc-health-check, the
 * usual choice, parses its .proto with protobufjs when it is imported, which costs every service a
 * noticeable share of its cold start; the generated encoders cost nothing until a probe calls.
 * Status names and semantics are the protocol's: an unknown service is NOT_FOUND for Check and
 * SERVICE_UNKNOWN for Watch; Watch sends the current status, then every change.
 */
import * as grpc from '@grpc/grpc-js';
import {
  type HealthServer,
  HealthService,
  HealthCheckResponse_ServingStatus as Status,
} from '../../gen/third_party/grpc/health/v1/health.js';

export { Status as ServingStatus };

export class Health {
  private readonly statuses = new Map<string, Status>();
  private readonly watchers = new Map<string, Set<grpc.ServerWritableStream<unknown, unknown>>>();

  /** Every name (and '' for the server as a whole) starts NOT_SERVING. */
  constructor(names: readonly string[]) {
    for (const name of ['', ...names]) this.statuses.set(name, Status.NOT_SERVING);
  }

  set(name: string, status: Status): void {
    if (this.statuses.get(name) === status) return;
    this.statuses.set(name, status);
    for (const call of this.watchers.get(name) ?? []) call.write({ status });
  }

  addToServer(server: grpc.Server): void {
    const impl: HealthServer = {
      check: (call, callback) => {
        const status = this.statuses.get(call.request.service);
        if (status === undefined)
          callback({ code: grpc.status.NOT_FOUND, details: `unknown service '${call.request.service}'` });
        else callback(null, { status });
      },
      watch: (call) => {
        const name = call.request.service;
        const set = this.watchers.get(name) ?? new Set();
        this.watchers.set(name, set);
        set.add(call as grpc.ServerWritableStream<unknown, unknown>);
        call.on('cancelled', () => set.delete(call as grpc.ServerWritableStream<unknown, unknown>));
        call.write({ status: this.statuses.get(name) ?? Status.SERVICE_UNKNOWN });
      },
      list: (_call, callback) => {
        callback(null, {
          statuses: Object.fromEntries([...this.statuses].map(([name, status]) => [name, { status }])),
        });
      },
    };
    server.addService(HealthService, impl);
  }

  /** Ends every Watch (on shutdown, so the drain does not wait for them). */
  endWatches(): void {
    for (const set of this.watchers.values()) for (const call of set) call.end();
    this.watchers.clear();
  }
}
