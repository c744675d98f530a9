/** Settings every duel service shares; each service extends this schema with its own keys. */
import { z } from 'zod';

export const serviceConfigSchema = z
  .object({
    /** Interface to bind; loopback unless configured otherwise. */
    host: z.string().min(1).default('127.0.0.1'),
    /** gRPC port; 0 picks a free one. */
    port: z.number().int().min(0).max(65535).default(0),
    logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
    grpc: z
      .object({
        maxMessageBytes: z
          .number()
          .int()
          .min(1024)
          .max(2 ** 31 - 1)
          .default(64 * 1024 * 1024),
        shutdownGraceMs: z.number().int().min(0).default(10_000),
      })
      .default({ maxMessageBytes: 64 * 1024 * 1024, shutdownGraceMs: 10_000 }),
    nats: z
      .object({
        url: z
          .string()
          .regex(/^(nats|tls):\/\//, 'must be a nats:// or tls:// URL')
          .default('nats://127.0.0.1:4222'),
      })
      .default({ url: 'nats://127.0.0.1:4222' }),
    models: z
      .object({
        /**
         * Models (sampler) or judges (scorer) to load before the service reports SERVING, each
         * `file:///path#<sha256 of its manifest>`.
         */
        preload: z
          .array(z.string().regex(/^file:\/\/\S+#[0-9a-f]{64}$/, 'must be file:///path#<64 hex digest>'))
          .default([]),
      })
      .default({ preload: [] }),
    admission: z
      .object({
        /** Expensive calls (sampling, scoring) running at once; 0: one per ONNX Runtime worker. */
        maxActive: z.number().int().min(0).default(0),
        /** Calls that may wait for a slot; beyond this a call gets RESOURCE_EXHAUSTED at once. */
        maxQueued: z.number().int().min(0).default(64),
      })
      .default({ maxActive: 0, maxQueued: 64 }),
    artifacts: z
      .object({
        /** Root of the file:// artifact store checkpoints are published into. */
        root: z.string().min(1).default('./artifacts'),
      })
      .default({ root: './artifacts' }),
    metrics: z
      .object({
        /** Prometheus /metrics port; 0 disables the endpoint. */
        port: z.number().int().min(0).max(65535).default(0),
      })
      .default({ port: 0 }),
  })
  .strict();

export type ServiceConfig = z.infer<typeof serviceConfigSchema>;
