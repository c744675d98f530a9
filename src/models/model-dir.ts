/**
 * A model directory in Hugging Face's layout: config.json, model.safetensors (or shards listed
 * in model.safetensors.index.json), tokenizer files beside them. Loading checks every tensor the
 * config implies, by name and shape, and widens F16/BF16 to float32. Saving builds the whole
 * directory under a temporary sibling and renames it into place, so a reader never sees half a
 * checkpoint and an existing directory is replaced only by a complete one.
 */
import { randomBytes } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import {
  type NamedTensor,
  readSafetensors,
  SafetensorsError,
  type StoredTensor,
  toBfloat16,
  writeSafetensors,
} from '../engine/index.js';
import { DuelError } from '../errors.js';
import { floatsToHalves, halvesToFloats } from './common/half.js';
import { type LlamaConfig, parseLlamaConfig, toHfConfig } from './llama/config.js';
import { type HostTensor, llamaParams, type ParamSpec } from './llama/weights.js';
import { readTorchStateDict } from './torch-bin.js';

const CONFIG_FILE = 'config.json';
const WEIGHTS_FILE = 'model.safetensors';
const INDEX_FILE = 'model.safetensors.index.json';
/** PyTorch's state dict, read (restrictedly) when a directory has no safetensors (torch-bin.ts). */
const TORCH_FILE = 'pytorch_model.bin';
/** Files copied along when a model directory is saved from another (tokenizer and chat template). */
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'];

export interface LoadedModel {
  dir: string;
  config: LlamaConfig;
  weights: Record<string, HostTensor>;
}

// Buffers older transformers versions saved that carry no learned state.
const IGNORED = /\.rotary_emb\.inv_freq$/;

const bad = (file: string, description: string) => DuelError.invalidArgument([{ field: file, description }]);

function readJson(path: string): unknown {
  if (!existsSync(path)) throw bad(path, 'file not found');
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw bad(path, `not valid JSON: ${(e as Error).message}`);
  }
}

/** Shard files and the tensors each should hold, from the index or the single file. */
function shardsOf(dir: string): Map<string, string[] | undefined> {
  const index = join(dir, INDEX_FILE);
  if (!existsSync(index))
    return new Map([
      [
        !existsSync(join(dir, WEIGHTS_FILE)) && existsSync(join(dir, TORCH_FILE)) ? TORCH_FILE : WEIGHTS_FILE,
        undefined,
      ],
    ]);
  const json = readJson(index) as { weight_map?: Record<string, unknown> };
  if (typeof json?.weight_map !== 'object' || json.weight_map === null)
    throw bad(index, 'has no weight_map object');
  const shards = new Map<string, string[]>();
  for (const [name, file] of Object.entries(json.weight_map)) {
    if (typeof file !== 'string' || basename(file) !== file)
      throw bad(
        index,
        `weight_map['${name}'] must be a file name in the same directory, got ${JSON.stringify(file)}`,
      );
    shards.set(file, [...(shards.get(file) ?? []), name]);
  }
  return shards;
}

function toFloat32(name: string, t: NamedTensor, file: string): HostTensor {
  if (t.dtype === 'float32') return { dtype: 'float32', dims: t.shape, data: t.data as Float32Array };
  if (t.dtype === 'float16')
    return { dtype: 'float32', dims: t.shape, data: halvesToFloats(t.data as Uint16Array) };
  if (t.dtype === 'float64')
    return { dtype: 'float32', dims: t.shape, data: Float32Array.from(t.data as Float64Array) };
  throw bad(file, `tensor '${name}' is ${t.dtype}; model weights must be F32, F16 or BF16`);
}

export function loadModelDir(dirPath: string): LoadedModel {
  const dir = resolve(dirPath);
  const config = parseLlamaConfig(readJson(join(dir, CONFIG_FILE)), join(dir, CONFIG_FILE));
  // A tied checkpoint may still carry lm_head.weight (some exporters write both).
  const tolerated = (name: string) =>
    IGNORED.test(name) || (name === 'lm_head.weight' && config.tieWordEmbeddings);
  const weights = readWeights(
    dir,
    llamaParams(config),
    tolerated,
    `a ${config.modelType} model with this config`,
  );
  return { dir, config, weights };
}

/** The config.json of a directory, parsed (errors name the file). */
export function readConfigJson(dir: string): unknown {
  return readJson(join(resolve(dir), CONFIG_FILE));
}

/** A safetensors (or torch.save) file parsed; a malformed one is INVALID_ARGUMENT naming the file and the fault. */
function parseWeightsFile(path: string) {
  if (path.endsWith('.bin')) return { tensors: readTorchStateDict(path) };
  try {
    return readSafetensors(path);
  } catch (e) {
    if (e instanceof SafetensorsError) throw bad(path, e.message.replace(`${path}: `, ''));
    throw e;
  }
}

/**
 * Reads every tensor `specs` names, checked by shape, widened to float32. A tensor the specs do
 * not name is an error (a checkpoint of another architecture) unless `tolerated`.
 */
export function readWeights(
  dir: string,
  specs: ParamSpec[],
  tolerated: (name: string) => boolean,
  what: string,
): Record<string, HostTensor> {
  const found = new Map<string, HostTensor>();
  for (const [file, expected] of shardsOf(dir)) {
    const path = join(dir, file);
    if (!existsSync(path)) throw bad(path, 'weights file not found');
    const { tensors } = parseWeightsFile(path);
    for (const name of expected ?? []) {
      if (!tensors.has(name)) throw bad(path, `the index lists tensor '${name}' here but the file lacks it`);
    }
    for (const [name, t] of tensors) found.set(name, toFloat32(name, t, path));
  }
  const weights: Record<string, HostTensor> = {};
  for (const spec of specs) {
    const t = found.get(spec.name);
    if (!t) throw bad(dir, `missing tensor '${spec.name}' (shape [${spec.shape}])`);
    if (t.dims.join() !== spec.shape.join())
      throw bad(dir, `tensor '${spec.name}' has shape [${t.dims}], the config implies [${spec.shape}]`);
    weights[spec.name] = t;
    found.delete(spec.name);
  }
  for (const name of found.keys()) {
    if (!tolerated(name)) throw bad(dir, `unexpected tensor '${name}': not part of ${what}`);
  }
  return weights;
}

export interface SaveOptions {
  /** On-disk dtype of the weights. @default 'float32' */
  dtype?: 'float32' | 'float16' | 'bfloat16';
  /** Copy tokenizer files from this directory. */
  tokenizerFrom?: string;
  /** Extra files to write (name → contents), e.g. a tokenizer made in memory. */
  extraFiles?: Record<string, string | Uint8Array>;
}

/** Writes a complete model directory at `dirPath`, replacing any directory there only once done. */
export function saveModelDir(
  dirPath: string,
  config: LlamaConfig,
  weights: Record<string, HostTensor>,
  options: SaveOptions = {},
): void {
  writeWeightsDir(
    dirPath,
    { ...toHfConfig(config), torch_dtype: options.dtype ?? 'float32' },
    llamaParams(config),
    weights,
    options,
  );
}

/** A directory of config.json + model.safetensors (+ tokenizer files), built aside and renamed in. */
export function writeWeightsDir(
  dirPath: string,
  configJson: Record<string, unknown>,
  specs: ParamSpec[],
  weights: Record<string, HostTensor>,
  options: SaveOptions = {},
): void {
  const dir = resolve(dirPath);
  const tensors = new Map<string, StoredTensor>();
  for (const spec of specs) {
    const t = weights[spec.name];
    if (!t) throw new Error(`saving ${dir}: no weights for '${spec.name}'`);
    if (t.dims.join() !== spec.shape.join())
      throw new Error(`saving ${dir}: '${spec.name}' is [${t.dims}], the config implies [${spec.shape}]`);
    tensors.set(
      spec.name,
      options.dtype === 'float16'
        ? { dtype: 'float16', shape: spec.shape, data: floatsToHalves(t.data) }
        : options.dtype === 'bfloat16'
          ? { dtype: 'bfloat16', shape: spec.shape, data: toBfloat16(t.data) }
          : {
              dtype: 'float32',
              shape: spec.shape,
              data: t.dtype === 'float32' ? t.data : Float32Array.from(t.data),
            },
    );
  }

  mkdirSync(dirname(dir), { recursive: true });
  const tmp = `${dir}.tmp-${randomBytes(6).toString('hex')}`;
  mkdirSync(tmp);
  try {
    writeFileSync(join(tmp, CONFIG_FILE), `${JSON.stringify(configJson, null, 2)}\n`);
    writeSafetensors(join(tmp, WEIGHTS_FILE), tensors, { format: 'pt' });
    if (options.tokenizerFrom) {
      for (const f of TOKENIZER_FILES) {
        const src = join(options.tokenizerFrom, f);
        if (existsSync(src)) copyFileSync(src, join(tmp, f));
      }
    }
    for (const [name, text] of Object.entries(options.extraFiles ?? {})) writeFileSync(join(tmp, name), text);
    replaceDir(tmp, dir);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Moves a finished directory over `dir`: the old one is set aside first and removed last. */
function replaceDir(done: string, dir: string): void {
  if (!existsSync(dir)) {
    renameSync(done, dir);
    return;
  }
  const old = `${dir}.old-${randomBytes(6).toString('hex')}`;
  renameSync(dir, old);
  try {
    renameSync(done, dir);
  } catch (e) {
    renameSync(old, dir);
    throw e;
  }
  rmSync(old, { recursive: true, force: true });
}
