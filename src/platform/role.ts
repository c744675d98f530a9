/**
 * What a service role gives `duel serve`: each services/<role>/role.ts exports its config schema
 * and `start`, and the serve command loads only the module of the role it runs. The process
 * around a role (gRPC server, health, metrics endpoint, signals, drain) is the serve command's.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { z } from 'zod';
import type { Runtime } from '../engine/index.js';
import type { ServiceRegistration } from './grpc/server.js';
import type { Logger } from './logger.js';
import type { ServiceMetrics } from './metrics.js';
import type { ServiceConfig } from './service-config.js';

export interface Role {
  /** The gRPC service(s) the role serves (the trainer: TrainerService and TrainingService). */
  registration: ServiceRegistration | ServiceRegistration[];
  /** Loads the models the config names before the server reports SERVING. */
  preload?: () => Promise<void>;
  /**
   * Pages the role serves on its HTTP port beside /metrics (the orchestrator's live run pages):
   * answers a request it knows and returns true, or returns false and leaves it.
   */
  http?: (req: IncomingMessage, res: ServerResponse) => boolean;
  /**
   * Work once the server listens (at `host:port`; the HTTP port, when one is configured, at
   * `httpPort`), before it reports SERVING (the orchestrator resumes runs, the trainer learns the
   * address its replicas forward to).
   */
  ready?: (at: { host: string; port: number; httpPort?: number }) => Promise<void>;
  /** Stops the role's own work after the server drained (before the process exits). */
  close?: () => Promise<void>;
}

export interface RoleContext<C extends ServiceConfig> {
  cfg: C;
  /** ONNX Runtime for the role; created on first call (the orchestrator never needs one). */
  runtime: () => Runtime;
  metrics: ServiceMetrics;
  log: Logger;
}

/**
 * A role's module as the serve command sees it: the role's schema extends the shared settings
 * (the only keys the serve command reads), and `start` receives the config that schema parsed.
 */
export interface RoleModule {
  config: z.ZodObject;
  start(ctx: RoleContext<ServiceConfig>): Promise<Role>;
}
