/**
 * Configuration from three layers, later ones winning: a file (YAML or JSON), the environment
 * (DUEL_*), and explicit overrides (CLI flags). The zod schema is the single source of truth: the
 * environment variable of a key is derived from its path (grpc.port ↔ DUEL_GRPC_PORT), values
 * from strings are coerced by the schema's leaf type, and every error names the key and where its
 * value came from. Unknown keys are errors, so a misspelt setting never silently does nothing.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { z } from 'zod';
import { DuelError } from '../errors.js';
import { Violations } from './violations.js';

export interface ConfigSources {
  /** Path of a YAML or JSON file. */
  file?: string | undefined;
  /** @default process.env */
  env?: NodeJS.ProcessEnv;
  /** Values that win over file and environment, as a nested object. */
  overrides?: Record<string, unknown>;
  /** @default 'DUEL' */
  envPrefix?: string;
}

type Schema = z.ZodType;
type Tree = Record<string, unknown>;

/** The environment variable that sets the key at `path`. */
export function envName(path: readonly string[], prefix = 'DUEL'): string {
  const snake = path.map((p) => p.replace(/([a-z0-9])([A-Z])/g, '$1_$2'));
  return [prefix, ...snake].join('_').toUpperCase();
}

function kind(schema: Schema): string {
  return (schema as unknown as { def: { type: string } }).def.type;
}

/** Strips optional/default/nullable wrappers to the schema that decides the value's type. */
function leaf(schema: Schema): Schema {
  let s = schema;
  for (;;) {
    const k = kind(s);
    if (k === 'optional' || k === 'default' || k === 'nullable' || k === 'prefault') {
      s = (s as unknown as { def: { innerType: Schema } }).def.innerType;
    } else {
      return s;
    }
  }
}

function shapeOf(schema: Schema): Record<string, Schema> | undefined {
  const s = leaf(schema);
  return kind(s) === 'object' ? (s as z.ZodObject).shape : undefined;
}

function coerce(raw: string, schema: Schema): unknown {
  switch (kind(leaf(schema))) {
    case 'number':
      return raw.trim() === '' ? Number.NaN : Number(raw);
    case 'boolean':
      if (/^(1|true|yes|on)$/i.test(raw)) return true;
      if (/^(0|false|no|off)$/i.test(raw)) return false;
      return raw;
    case 'array':
      return raw === '' ? [] : raw.split(',').map((x) => x.trim());
    default:
      return raw;
  }
}

function fromEnv(schema: Schema, env: NodeJS.ProcessEnv, prefix: string, path: string[] = []): Tree {
  const out: Tree = {};
  for (const [key, child] of Object.entries(shapeOf(schema) ?? {})) {
    const p = [...path, key];
    if (shapeOf(child)) {
      const nested = fromEnv(child, env, prefix, p);
      if (Object.keys(nested).length > 0) out[key] = nested;
    } else {
      const raw = env[envName(p, prefix)];
      if (raw !== undefined) out[key] = coerce(raw, child);
    }
  }
  return out;
}

function unknownKeys(schema: Schema, value: unknown, path: string[], v: Violations, origin: string): void {
  const shape = shapeOf(schema);
  if (!shape || typeof value !== 'object' || value === null || Array.isArray(value)) return;
  for (const [key, child] of Object.entries(value)) {
    const p = [...path, key];
    const sub = shape[key];
    if (sub === undefined)
      v.add(p.join('.'), `unknown key (in ${origin}); known: ${Object.keys(shape).join(', ')}`);
    else unknownKeys(sub, child, p, v, origin);
  }
}

function merge(base: Tree, over: Tree): Tree {
  const out: Tree = { ...base };
  for (const [k, val] of Object.entries(over)) {
    const prev = out[k];
    const bothObjects =
      typeof prev === 'object' &&
      prev !== null &&
      !Array.isArray(prev) &&
      typeof val === 'object' &&
      val !== null;
    out[k] = bothObjects && !Array.isArray(val) ? merge(prev as Tree, val as Tree) : val;
  }
  return out;
}

/**
 * The YAML parser, loaded when a config file is read: most services start from the environment
 * alone, and yaml is a noticeable share of a cold start.
 */
function parseYaml(text: string): unknown {
  const yaml = createRequire(import.meta.url)('yaml') as typeof import('yaml');
  return yaml.parse(text);
}

function readFile(file: string): Tree {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (cause) {
    throw DuelError.invalidArgument([
      { field: 'config', description: `cannot read ${file}: ${String(cause)}` },
    ]);
  }
  let parsed: unknown;
  try {
    parsed = parseYaml(text);
  } catch (cause) {
    throw DuelError.invalidArgument([
      { field: 'config', description: `${file} is not valid YAML/JSON: ${String(cause)}` },
    ]);
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw DuelError.invalidArgument([
      { field: 'config', description: `${file} must hold a mapping of keys` },
    ]);
  }
  return parsed as Tree;
}

/** Loads and validates a configuration; throws INVALID_ARGUMENT listing every bad key. */
export function loadConfig<S extends z.ZodObject>(schema: S, sources: ConfigSources = {}): z.infer<S> {
  const prefix = sources.envPrefix ?? 'DUEL';
  const fileTree = sources.file ? readFile(sources.file) : {};
  const envTree = fromEnv(schema, sources.env ?? process.env, prefix);
  const overrides = sources.overrides ?? {};

  const v = new Violations();
  unknownKeys(schema, fileTree, [], v, sources.file ?? 'file');
  unknownKeys(schema, overrides, [], v, 'overrides');
  v.throwIfAny();

  const merged = merge(merge(fileTree, envTree), overrides);
  const result = schema.safeParse(merged);
  if (!result.success) {
    for (const issue of result.error.issues) {
      const path = issue.path.map(String);
      const origin = hasPath(overrides, path)
        ? 'from overrides'
        : hasPath(envTree, path)
          ? `from ${envName(path, prefix)}`
          : hasPath(fileTree, path)
            ? `from ${sources.file}`
            : 'default';
      v.add(path.join('.') || 'config', `${issue.message} (${origin})`);
    }
    v.throwIfAny();
  }
  return result.data as z.infer<S>;
}

function hasPath(tree: Tree, path: string[]): boolean {
  let node: unknown = tree;
  for (const key of path) {
    if (typeof node !== 'object' || node === null || !(key in node)) return false;
    node = (node as Tree)[key];
  }
  return true;
}

/** Lists every key of a schema with its environment variable, for `--help` and docs. */
export function describeConfig(
  schema: Schema,
  prefix = 'DUEL',
  path: string[] = [],
): { key: string; env: string }[] {
  const rows: { key: string; env: string }[] = [];
  for (const [key, child] of Object.entries(shapeOf(schema) ?? {})) {
    const p = [...path, key];
    if (shapeOf(child)) rows.push(...describeConfig(child, prefix, p));
    else rows.push({ key: p.join('.'), env: envName(p, prefix) });
  }
  return rows;
}
