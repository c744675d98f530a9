/** Settings every duel service shares; each service extends this schema with its own keys. */
import { z } from 'zod';
import { isMemoryBus, MEMORY_BUS_URL } from './bus.js';
import { tlsSchema } from './tls.js';

export const serviceConfigSchema = z
  .object({
    /** Interface to bind; loopback unless configured otherwise. */
    host: z.string().min(1).default('127.0.0.1'),
    /** gRPC port; 0 picks a free one. */
    port: z.number().int().min(0).max(65535).default(0),
    /** gRPC TLS / mutual TLS for this service's server and its outgoing calls (src/platform/tls.ts). */
    tls: tlsSchema,
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
        /**
         * The NATS server, or `memory:` for the in-process bus: the orchestrator then keeps events
         * and run records in its own memory (no restart safety) and nothing else may need NATS.
         */
        url: z
          .string()
          .regex(/^((nats|tls):\/\/|memory:$)/, `must be a nats:// or tls:// URL, or ${MEMORY_BUS_URL}`)
          .default('nats://127.0.0.1:4222'),
        /** Username and password login (DUEL_NATS_USER, DUEL_NATS_PASSWORD: from a Secret). */
        user: z.string().default(''),
        password: z.string().default(''),
        /** Token login (DUEL_NATS_TOKEN). */
        token: z.string().default(''),
        /** Path of an nkey seed file: login by nkey signature, the seed never leaves the process. */
        nkeySeed: z.string().default(''),
        /** Path of a .creds file (user JWT and seed) for a server in operator mode. */
        creds: z.string().default(''),
        /** TLS to NATS: CA to trust; client certificate and key when the server verifies clients. */
        tls: z
          .object({ ca: z.string().default(''), cert: z.string().default(''), key: z.string().default('') })
          .prefault({}),
      })
      .prefault({}),
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
        /**
         * Where the trainer publishes checkpoints: `file` (under root, shared by volume) or `nats`
         * (the JetStream object store `bucket` on nats.url). Every service reads either scheme.
         */
        store: z.enum(['file', 'nats']).default('file'),
        /** Root of the file:// store; nats:// downloads are cached under root/.nats-cache. */
        root: z.string().min(1).default('./artifacts'),
        bucket: z
          .string()
          .regex(/^[A-Za-z0-9_-]+$/, 'may hold only letters, digits, _ and -')
          .default('duel_artifacts'),
      })
      .prefault({}),
    orchestrator: z
      .object({
        /** Sampler replica addresses (host:port), each stage sharded over them. */
        samplers: z.array(z.string().min(1)).default([]),
        scorers: z.array(z.string().min(1)).default([]),
        trainer: z.string().default(''),
        /** Deadline of one Sample or Compare call. */
        callDeadlineMs: z.number().int().min(100).default(600_000),
        /** Deadline of one TrainRound call (the whole round's training). */
        trainDeadlineMs: z
          .number()
          .int()
          .min(100)
          .default(6 * 3_600_000),
        /** Prompts per Sample/Compare call: the shard size. */
        promptsPerCall: z.number().int().min(1).default(32),
        /** How long a stage waits for any replica of a role before the round fails. */
        maxWaitMs: z.number().int().min(0).default(120_000),
        /**
         * The durable consumer of rounds waiting for training (src/platform/wake-consumer.ts),
         * created at start when set: what KEDA scales a trainer from zero on. Empty: none.
         */
        trainerWakeConsumer: z.string().default(''),
      })
      .prefault({}),
    trainer: z
      .object({
        /** Acknowledge rounds on this wake consumer once trained (the orchestrator's trainerWakeConsumer). */
        wakeConsumer: z.string().default(''),
      })
      .prefault({}),
    runtime: z
      .object({
        /** ONNX Runtime execution provider: the graphs are the same, only where they run changes. */
        provider: z.enum(['cpu', 'cuda', 'webgpu']).default('cpu'),
        /** ONNX Runtime worker threads; 0: one per core the container may use, at most 4. */
        workers: z.number().int().min(0).max(64).default(0),
      })
      .prefault({}),
    metrics: z
      .object({
        /** Prometheus /metrics port; 0 disables the endpoint. */
        port: z.number().int().min(0).max(65535).default(0),
      })
      .default({ port: 0 }),
  })
  .strict()
  .superRefine((c, ctx) => {
    const n = c.nats;
    const logins = [
      n.user || n.password ? 'user' : '',
      n.token ? 'token' : '',
      n.nkeySeed ? 'nkeySeed' : '',
      n.creds ? 'creds' : '',
    ].filter(Boolean);
    if (logins.length > 1)
      ctx.addIssue({
        code: 'custom',
        path: ['nats', logins[1]!],
        message: `choose one login: ${logins.join(', ')} are all set`,
      });
    if ((n.user === '') !== (n.password === ''))
      ctx.addIssue({
        code: 'custom',
        path: ['nats', n.user ? 'password' : 'user'],
        message: 'nats.user and nats.password go together',
      });
    if ((n.tls.cert === '') !== (n.tls.key === ''))
      ctx.addIssue({
        code: 'custom',
        path: ['nats', 'tls', n.tls.cert ? 'key' : 'cert'],
        message: 'nats.tls.cert and nats.tls.key go together',
      });
    if (!isMemoryBus(c.nats.url)) return;
    const needsNats = (path: string[], what: string) =>
      ctx.addIssue({ code: 'custom', path, message: `${what} needs a NATS server, not the in-process bus` });
    if (c.artifacts.store === 'nats') needsNats(['artifacts', 'store'], 'the nats artifact store');
    if (c.orchestrator.trainerWakeConsumer)
      needsNats(['orchestrator', 'trainerWakeConsumer'], 'a wake consumer');
    if (c.trainer.wakeConsumer) needsNats(['trainer', 'wakeConsumer'], 'a wake consumer');
  });

export type ServiceConfig = z.infer<typeof serviceConfigSchema>;
