/**
 * Every message of every duel contract survives the wire: protobufjs (an independent codec
 * reading the same .proto files) encodes a random, fully populated message; the generated ts-proto
 * codec decodes and re-encodes it; protobufjs decodes the result, which must equal the original.
 */
import { join } from 'node:path';
import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import * as common from '../../src/gen/duel/v1/common.js';
import * as events from '../../src/gen/duel/v1/events.js';
import * as runs from '../../src/gen/duel/v1/runs.js';
import * as sampler from '../../src/gen/duel/v1/sampler.js';
import * as scorer from '../../src/gen/duel/v1/scorer.js';
import * as trainer from '../../src/gen/duel/v1/trainer.js';
import * as training from '../../src/gen/duel/v1/training.js';
import { rng } from '../../src/models/common/rng.js';
import { protoRoot } from '../../src/platform/paths.js';

const FILES = ['common', 'sampler', 'scorer', 'trainer', 'training', 'runs', 'events'];
const GENERATED: Record<string, Record<string, unknown>> = {
  common,
  sampler,
  scorer,
  trainer,
  training,
  runs,
  events,
};

interface Codec {
  encode(m: unknown): { finish(): Uint8Array };
  decode(b: Uint8Array): unknown;
}

function loadRoot(): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) =>
    target.startsWith('google/protobuf/') ? target : join(protoRoot(), target);
  root.loadSync(FILES.map((f) => `duel/v1/${f}.proto`));
  root.resolveAll();
  return root;
}

function randomScalar(type: string, r: () => number): unknown {
  switch (type) {
    case 'double':
      return (r() - 0.5) * 1e6;
    case 'float':
      return Math.fround((r() - 0.5) * 100);
    case 'uint32':
      return Math.floor(r() * 2 ** 32);
    case 'int32':
      return Math.floor((r() - 0.5) * 2 ** 31);
    case 'uint64':
    case 'int64':
      return Math.floor(r() * 2 ** 52);
    case 'bool':
      return true;
    case 'string':
      return `s${Math.floor(r() * 1e9)}-✓`;
    case 'bytes':
      return Buffer.from([1, 2, 3, Math.floor(r() * 256)]);
    default:
      throw new Error(`no generator for ${type}`);
  }
}

function randomValue(field: protobuf.Field, r: () => number, depth: number): unknown {
  const t = field.resolvedType;
  if (t instanceof protobuf.Enum) {
    const values = Object.values(t.values).filter((v) => v !== 0);
    return values[Math.floor(r() * values.length)];
  }
  if (t instanceof protobuf.Type) return randomMessage(t, r, depth + 1);
  return randomScalar(field.type, r);
}

function randomMessage(type: protobuf.Type, r: () => number, depth = 0): Record<string, unknown> {
  // A valid Timestamp (years 1970–2100) at millisecond precision, which is what duel promises.
  if (type.fullName === '.google.protobuf.Timestamp') {
    return { seconds: Math.floor(r() * 4.1e9), nanos: Math.floor(r() * 1000) * 1e6 };
  }
  const out: Record<string, unknown> = {};
  if (depth > 4) return out;
  const oneofFields = new Set(type.oneofsArray.flatMap((o) => o.fieldsArray.map((f) => f.name)));
  for (const o of type.oneofsArray) {
    // proto3 `optional` is a synthetic oneof of one field: always set it.
    const pick = o.fieldsArray[Math.floor(r() * o.fieldsArray.length)]!;
    out[pick.name] = randomValue(pick, r, depth);
  }
  for (const field of type.fieldsArray) {
    if (oneofFields.has(field.name)) continue;
    if (field instanceof protobuf.MapField) {
      out[field.name] = { a: randomValue(field, r, depth), b: randomValue(field, r, depth) };
    } else if (field.repeated) {
      out[field.name] = [randomValue(field, r, depth), randomValue(field, r, depth)];
    } else {
      out[field.name] = randomValue(field, r, depth);
    }
  }
  return out;
}

function messageTypes(ns: protobuf.NamespaceBase, prefix = ''): { name: string; type: protobuf.Type }[] {
  const out: { name: string; type: protobuf.Type }[] = [];
  for (const nested of ns.nestedArray) {
    if (nested instanceof protobuf.Type) {
      const name = prefix + nested.name;
      out.push({ name, type: nested }, ...messageTypes(nested, `${name}_`));
    }
  }
  return out;
}

const root = loadRoot();
const pkg = root.lookup('duel.v1') as protobuf.Namespace;
const types = messageTypes(pkg);
const toObject = { longs: Number, enums: Number, bytes: Array, defaults: false, arrays: true, objects: true };

describe('contracts round-trip through the generated codec', () => {
  it('covers every message of the duel.v1 package', () => {
    expect(types.length).toBeGreaterThan(40);
  });

  it.each(types.map((t) => [t.name, t.type] as const))('%s', (name, type) => {
    const codec = Object.values(GENERATED)
      .map((mod) => mod[name])
      .find((c): c is Codec => c !== undefined) as Codec | undefined;
    expect(codec, `generated codec for ${name}`).toBeDefined();
    for (const seed of [1, 2, 3]) {
      const original = type.fromObject(randomMessage(type, rng(seed)));
      const wire = type.encode(original).finish();
      const again = codec!.encode(codec!.decode(wire)).finish();
      expect(type.toObject(type.decode(again), toObject), `seed ${seed}`).toEqual(
        type.toObject(original, toObject),
      );
    }
  });
});

describe('contract semantics that callers rely on', () => {
  it('keeps proto3 optional fields distinguishable from zero (temperature 0 = greedy)', () => {
    const greedy = common.SamplingParams.decode(
      common.SamplingParams.encode({ numSamples: 4, maxNewTokens: 8, temperature: 0, topK: 0 }).finish(),
    );
    const unset = common.SamplingParams.decode(
      common.SamplingParams.encode({ numSamples: 4, maxNewTokens: 8, topK: 0 }).finish(),
    );
    expect(greedy.temperature).toBe(0);
    expect(unset.temperature).toBeUndefined();
  });

  it('carries the trainer stream as a oneof of config then records', () => {
    const first = trainer.TrainRoundRequest.decode(
      trainer.TrainRoundRequest.encode({
        kind: {
          $case: 'config',
          config: trainer.TrainRoundConfig.fromPartial({ algorithm: 'sppo', round: 3 }),
        },
      }).finish(),
    );
    expect(first.kind?.$case).toBe('config');
    if (first.kind?.$case === 'config') expect(first.kind.config.algorithm).toBe('sppo');
  });

  it('round-trips event timestamps to the millisecond', () => {
    const time = new Date('2026-11-23T10:11:12.345Z');
    const e = events.RunEvent.decode(
      events.RunEvent.encode(
        events.RunEvent.fromPartial({
          runId: 'r1',
          kind: events.EventKind.EVENT_KIND_ROUND_SCORED,
          round: 2,
          time,
        }),
      ).finish(),
    );
    expect(e.time?.toISOString()).toBe(time.toISOString());
    expect(e.kind).toBe(events.EventKind.EVENT_KIND_ROUND_SCORED);
  });
});
