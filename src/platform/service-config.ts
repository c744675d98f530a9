/**
 * Settings every duel service shares. Each role (services/<role>/role.ts) extends them with a
 * section of its own through `serviceConfig`, so a role parses, documents and accepts only the keys
 * it uses.
 */
import { z } from 'zod';
import { COMPUTE_DTYPES, PROVIDERS } from '../engine/runtime/protocol.js';
import { isMemoryBus, MEMORY_BUS_URL } from './bus.js';
import { tlsSchema } from './tls.js';

const shared = {
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
       * The NATS server, or several of one cluster comma-separated (the client fails over between
       * them), or `memory:` for the in-process bus: the orchestrator then keeps events and run
       * records in its own memory (no restart safety) and nothing else may need NATS.
       */
      url: z
        .string()
        .refine(
          (u) => u === MEMORY_BUS_URL || u.split(',').every((x) => /^(nats|tls):\/\/[^\s,]+$/.test(x.trim())),
          `must be nats:// or tls:// URLs (comma-separated for a cluster), or ${MEMORY_BUS_URL}`,
        )
        .default('nats://127.0.0.1:4222'),
      /**
       * Copies JetStream keeps of every stream, KV bucket and object store duel creates (a
       * clustered NATS: 3 for one server's loss); an existing one with fewer is raised to it.
       */
      replicas: z.number().int().min(1).max(5).default(1),
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
  runtime: z
    .object({
      /** ONNX Runtime execution provider: the graphs are the same, only where they run changes. */
      provider: z.enum(PROVIDERS).default('cpu'),
      /** ONNX Runtime worker threads; 0: one per core the container may use, at most 4. */
      workers: z.number().int().min(0).max(64).default(0),
      /**
       * What the services compute in: float16 halves the weights and KV cache of decoding and of
       * every judge (duel's, PairRM, the reward models; norms, softmax and logits stay float32),
       * and a trainer's rounds train in mixed precision (float32 master weights, the loss scaled);
       * the Logprobs call and the training sessions are float32 either way.
       */
      dtype: z.enum(COMPUTE_DTYPES).default('float32'),
    })
    .prefault({}),
  metrics: z
    .object({
      /** Prometheus /metrics port; 0 disables the endpoint. */
      port: z.number().int().min(0).max(65535).default(0),
    })
    .default({ port: 0 }),
  telemetry: z
    .object({
      otlp: z
        .object({
          /**
           * OTLP/HTTP traces endpoint (e.g. http://otel-collector:4318/v1/traces); '' leaves it to
           * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT, and with neither
           * tracing is off.
           */
          endpoint: z.string().default(''),
        })
        .prefault({}),
    })
    .prefault({}),
};

type Shared = z.infer<z.ZodObject<typeof shared>>;

/** The shared settings plus a role's own keys; `check` adds the role's cross-field rules. */
export function serviceConfig<R extends z.ZodRawShape>(
  role: R,
  check: (c: z.infer<z.ZodObject<typeof shared & R>>, issue: Issue) => void = () => {},
) {
  return z
    .object({ ...shared, ...role })
    .strict()
    .superRefine((c, ctx) => {
      const issue: Issue = (path, message) => ctx.addIssue({ code: 'custom', path, message });
      sharedChecks(c as Shared, issue);
      check(c as z.infer<z.ZodObject<typeof shared & R>>, issue);
    });
}

export type Issue = (path: string[], message: string) => void;

/** The sections of the roles that serve models (sampler, scorer): what to preload, how many calls at once. */
const modelServingSettings = {
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
};

/** The settings of a role without a section of its own, and of tools that reach the artifact stores. */
export const serviceConfigSchema = serviceConfig({});
export type ServiceConfig = z.infer<typeof serviceConfigSchema>;

/** A rule for a role's key that needs a NATS server: refused on the in-process bus. */
export function needsNats(c: Pick<Shared, 'nats'>, issue: Issue, path: string[], what: string): void {
  if (isMemoryBus(c.nats.url)) issue(path, `${what} needs a NATS server, not the in-process bus`);
}

function sharedChecks(c: Shared, issue: Issue): void {
  const n = c.nats;
  const logins = [
    n.user || n.password ? 'user' : '',
    n.token ? 'token' : '',
    n.nkeySeed ? 'nkeySeed' : '',
    n.creds ? 'creds' : '',
  ].filter(Boolean);
  if (logins.length > 1) issue(['nats', logins[1]!], `choose one login: ${logins.join(', ')} are all set`);
  if ((n.user === '') !== (n.password === ''))
    issue(['nats', n.user ? 'password' : 'user'], 'nats.user and nats.password go together');
  if ((n.tls.cert === '') !== (n.tls.key === ''))
    issue(['nats', 'tls', n.tls.cert ? 'key' : 'cert'], 'nats.tls.cert and nats.tls.key go together');
  if (c.artifacts.store === 'nats') needsNats(c, issue, ['artifacts', 'store'], 'the nats artifact store');
}

/** The sampler's and the scorer's settings. */
export const modelServingConfig = serviceConfig(modelServingSettings);
export type ModelServingConfig = z.infer<typeof modelServingConfig>;

/** The scorer's: a model server's, and judge types from modules (src/models/judge/judge-type.ts). */
export const scorerConfig = serviceConfig({
  ...modelServingSettings,
  judges: z
    .object({
      /** Paths of modules exporting `judgeTypes`, imported at start (the demo's: the testbed's oracle). */
      modules: z.array(z.string().min(1)).default([]),
    })
    .prefault({}),
});
export type ScorerConfig = z.infer<typeof scorerConfig>;
