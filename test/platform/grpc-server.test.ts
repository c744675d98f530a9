/**
 * The server factory over real gRPC on loopback, with the sampler contract and a handler set that
 * validates like the real service and answers by echoing (the model side is issue 6's; what is
 * under test here is the platform: health, validation errors, decoding, cancellation, draining).
 */
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DEFAULT_SAMPLER_LIMITS, validateSampleRequest } from '../../services/sampler/validate.js';
import {
  type PolicySamplerServiceClient as Client,
  type LoadModelRequest,
  type LoadModelResponse,
  PolicySamplerServiceClient,
  PolicySamplerServiceService,
  type SampleRequest,
  type SampleResponse,
} from '../../src/gen/duel/v1/sampler.js';
import { HealthClient } from '../../src/gen/third_party/grpc/health/v1/health.js';
import { ServingStatus } from '../../src/platform/grpc/health.js';
import {
  Code,
  createLogger,
  DuelError,
  GrpcServer,
  service,
  violationsOf,
} from '../../src/platform/index.js';
import { collect, healthCheck, unary } from '../helpers/grpc.js';

const SHA = 'a'.repeat(64);
const MODEL = { artifact: { uri: 'file:///models/policy', sha256: SHA }, adapter: undefined, name: 'policy' };
const quiet = createLogger('test', { level: 'silent' });

function goodRequest(overrides: Partial<SampleRequest> = {}): SampleRequest {
  return {
    model: MODEL,
    prompts: [{ tokenIds: [1, 5, 6], text: '', id: 'p0' }],
    params: { numSamples: 2, maxNewTokens: 3, topK: 0, temperature: 1 },
    mixtureReference: undefined,
    mixtureCoef: 0,
    ...overrides,
  };
}

interface Harness {
  server: GrpcServer;
  client: Client;
  address: string;
  aborted: Promise<unknown>;
  /** Resolves once a LoadModel call has reached the service (and waits at the gate). */
  entered: Promise<void>;
  release: () => void;
}

async function startHarness(shutdownGraceMs = 5_000): Promise<Harness> {
  let onAbort: (reason: unknown) => void = () => {};
  const aborted = new Promise<unknown>((resolve) => (onAbort = resolve));
  let release: () => void = () => {};
  const gate = new Promise<void>((resolve) => (release = resolve));
  let enter: () => void = () => {};
  const entered = new Promise<void>((resolve) => (enter = resolve));
  const server = new GrpcServer({
    logger: quiet,
    shutdownGraceMs,
    services: [
      service(PolicySamplerServiceService, {
        async loadModel(req) {
          // Waits for the test's gate: a call that is in flight when shutdown begins.
          enter();
          await gate;
          return { model: req.model, parameterCount: 0, loadSeconds: 0 };
        },
        async unloadModel() {
          return { wasLoaded: false };
        },
        async *sample(req, ctx): AsyncIterable<SampleResponse> {
          validateSampleRequest(req, DEFAULT_SAMPLER_LIMITS);
          if (req.prompts[0]?.id === 'hang') {
            ctx.signal.addEventListener('abort', () => onAbort(ctx.signal.reason));
            await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve));
            return;
          }
          for (const [promptIndex, p] of req.prompts.entries()) {
            for (let k = 0; k < (req.params?.numSamples || 1); k++) {
              yield {
                promptIndex,
                sampleIndex: k,
                completion: {
                  tokenIds: p.tokenIds,
                  text: '',
                  tokenLogprobs: [],
                  logprob: 0,
                  source: 1,
                  finished: true,
                },
              };
            }
          }
        },
        async logprobs() {
          throw DuelError.failedPrecondition('no model loaded');
        },
      }),
    ],
  });
  const port = await server.start();
  const address = `127.0.0.1:${port}`;
  const client = new PolicySamplerServiceClient(address, grpc.credentials.createInsecure());
  return { server, client, address, aborted, entered, release };
}

let harness: Harness | undefined;
afterEach(async () => {
  harness?.release();
  harness?.client.close();
  await harness?.server.shutdown('test over');
  harness = undefined;
});

describe('GrpcServer', () => {
  it('reports NOT_SERVING until the service marks itself ready, then SERVING', async () => {
    harness = await startHarness();
    const name = 'duel.v1.PolicySamplerService';
    expect(await healthCheck(harness.address)).toBe('NOT_SERVING');
    expect(await healthCheck(harness.address, name)).toBe('NOT_SERVING');
    harness.server.setServing(true);
    expect(await healthCheck(harness.address)).toBe('SERVING');
    expect(await healthCheck(harness.address, name)).toBe('SERVING');
    await expect(healthCheck(harness.address, 'duel.v1.NoSuchService')).rejects.toMatchObject({
      code: grpc.status.NOT_FOUND,
    });
  });

  it('streams health changes to a watcher and ends the watch when draining', async () => {
    harness = await startHarness();
    const client = new HealthClient(harness.address, grpc.credentials.createInsecure());
    const seen: ServingStatus[] = [];
    const watch = client.watch({ service: '' });
    const ended = new Promise<void>((resolve) => watch.on('end', resolve));
    watch.on('data', (r: { status: ServingStatus }) => seen.push(r.status));
    await vi.waitFor(() => expect(seen).toEqual([ServingStatus.NOT_SERVING]));
    harness.server.setServing(true);
    await vi.waitFor(() => expect(seen).toEqual([ServingStatus.NOT_SERVING, ServingStatus.SERVING]));
    await harness.server.shutdown('test over');
    await ended;
    expect(seen).toEqual([ServingStatus.NOT_SERVING, ServingStatus.SERVING, ServingStatus.NOT_SERVING]);
    client.close();
  });

  it('serves a generated client end to end (server streaming)', async () => {
    harness = await startHarness();
    const out = await collect(harness.client.sample(goodRequest()));
    expect(out.map((r) => [r.promptIndex, r.sampleIndex, r.completion?.tokenIds])).toEqual([
      [0, 0, [1, 5, 6]],
      [0, 1, [1, 5, 6]],
    ]);
  });

  it('answers a malformed request with INVALID_ARGUMENT naming every bad field, and keeps serving', async () => {
    harness = await startHarness();
    harness.server.setServing(true);
    const bad = goodRequest({
      model: undefined,
      params: { numSamples: 2, maxNewTokens: 0, topK: 0, topP: 1.5, temperature: -1 },
    });
    const err = (await collect(harness.client.sample(bad)).catch((e) => e)) as grpc.ServiceError;
    expect(err.code).toBe(Code.INVALID_ARGUMENT);
    const fields = violationsOf(err).map((v) => v.field);
    expect(fields).toEqual(['model', 'params.max_new_tokens', 'params.temperature', 'params.top_p']);
    expect(err.details).toContain('params.top_p: must be in (0, 1], got 1.5');

    // The same server still answers good requests and still reports SERVING.
    expect(await collect(harness.client.sample(goodRequest()))).toHaveLength(2);
    expect(await healthCheck(harness.address)).toBe('SERVING');
  });

  it('answers bytes that are not a protobuf message with INVALID_ARGUMENT, not INTERNAL', async () => {
    harness = await startHarness();
    const raw = new grpc.Client(harness.address, grpc.credentials.createInsecure());
    const garbage = Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]); // field 1, length far past the end
    const err = await new Promise<grpc.ServiceError>((resolve) =>
      raw.makeUnaryRequest(
        '/duel.v1.PolicySamplerService/UnloadModel',
        (b: Buffer) => b,
        (b: Buffer) => b,
        garbage,
        (e) => resolve(e!),
      ),
    );
    raw.close();
    expect(err.code).toBe(Code.INVALID_ARGUMENT);
    expect(violationsOf(err).map((v) => v.field)).toEqual(['request']);
  });

  it('maps a DuelError thrown by a handler to its status code', async () => {
    harness = await startHarness();
    const err = await unary(harness.client.logprobs.bind(harness.client), {
      model: MODEL,
      sequences: [],
    }).catch((e: grpc.ServiceError) => e);
    expect((err as grpc.ServiceError).code).toBe(Code.FAILED_PRECONDITION);
  });

  it('aborts the handler signal when the client cancels', async () => {
    harness = await startHarness();
    const call = harness.client.sample(goodRequest({ prompts: [{ tokenIds: [1], text: '', id: 'hang' }] }));
    call.on('error', () => {});
    await new Promise((r) => setTimeout(r, 100));
    call.cancel();
    const reason = (await harness.aborted) as DuelError;
    expect(reason.code).toBe(Code.CANCELLED);
  });

  it('aborts the handler signal when the deadline passes', async () => {
    harness = await startHarness();
    const call = harness.client.sample(goodRequest({ prompts: [{ tokenIds: [1], text: '', id: 'hang' }] }), {
      deadline: Date.now() + 200,
    });
    const err = await collect(call).catch((e: grpc.ServiceError) => e);
    expect((err as grpc.ServiceError).code).toBe(Code.DEADLINE_EXCEEDED);
    expect(((await harness.aborted) as DuelError).code).toBe(Code.DEADLINE_EXCEEDED);
  });

  it('describes the duel contracts through server reflection', async () => {
    harness = await startHarness();
    // Reflection is registered once the server first reports SERVING.
    expect(harness.server.reflection).toBeUndefined();
    harness.server.setServing(true);
    await harness.server.reflection;
    const defs = loadSync('grpc/reflection/v1/reflection.proto', {
      includeDirs: [new URL('../../node_modules/@grpc/reflection/build/proto', import.meta.url).pathname],
    });
    const pkg = grpc.loadPackageDefinition(defs) as unknown as {
      grpc: { reflection: { v1: { ServerReflection: grpc.ServiceClientConstructor } } };
    };
    type ListReply = { listServicesResponse: { service: { name: string }[] } };
    const client = new pkg.grpc.reflection.v1.ServerReflection(
      harness.address,
      grpc.credentials.createInsecure(),
    ) as unknown as grpc.Client & { ServerReflectionInfo(): grpc.ClientDuplexStream<unknown, ListReply> };
    const call = client.ServerReflectionInfo();
    const names = await new Promise<string[]>((resolve, reject) => {
      call.on('data', (res: ListReply) => {
        resolve(res.listServicesResponse.service.map((s) => s.name));
        call.end();
      });
      call.on('error', reject);
      call.write({ listServices: '' });
    });
    client.close();
    expect(names).toEqual(
      expect.arrayContaining([
        'duel.v1.PolicySamplerService',
        'duel.v1.PreferenceScorerService',
        'duel.v1.TrainerService',
        'duel.v1.RunsService',
      ]),
    );
  });

  it('drains on shutdown: NOT_SERVING at once, the in-flight call completes, new calls are refused', async () => {
    harness = await startHarness();
    harness.server.setServing(true);
    const inFlight = unary<LoadModelRequest, LoadModelResponse>(
      harness.client.loadModel.bind(harness.client),
      {
        model: MODEL,
      },
    );
    // In flight: at the service, not merely sent (a loaded machine may take longer than any fixed wait).
    await harness.entered;
    const closed = harness.server.shutdown('test');
    // Health flips before the drain finishes; the in-flight call is still held by the gate.
    const flipped = await healthCheck(harness.address).catch((e: grpc.ServiceError) => e.code);
    expect(['NOT_SERVING', Code.UNAVAILABLE]).toContain(flipped);
    harness.release();
    expect((await inFlight).model?.name).toBe('policy');
    await closed;
    const after = await unary(harness.client.unloadModel.bind(harness.client), { model: MODEL }).catch(
      (e: grpc.ServiceError) => e.code,
    );
    expect(after).toBe(Code.UNAVAILABLE);
  });
});
