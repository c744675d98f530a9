/**
 * LoRA adapters in PEFT's directory layout: `adapter_config.json` and `adapter_model.safetensors`
 * with PEFT's tensor names (`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`,
 * [r, in]; `...lora_B.weight`, [out, r]). Inside duel the `base_model.model.` prefix is dropped,
 * so an adapter's tensors sit beside the base model's under Hugging Face names, and a decoder
 * looks both up the same way. Every tensor is checked against the base model: an adapter for
 * another architecture, size or target list is INVALID_ARGUMENT naming the tensor and both shapes.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { readSafetensors, type StoredTensor, writeSafetensors } from '../../engine/safetensors.js';
import { DuelError } from '../../errors.js';
import { rng } from '../common/rng.js';
import type { LlamaConfig } from '../llama/config.js';
import { type HostTensor, llamaParams, type ParamSpec } from '../llama/weights.js';
import {
  adapterConfigJson,
  type LoraConfig,
  loraScale,
  parseAdapterConfig,
  targetModules,
} from './config.js';

export const ADAPTER_CONFIG = 'adapter_config.json';
export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';
const PEFT_PREFIX = 'base_model.model.';

export interface Adapter {
  config: LoraConfig;
  /** lora_A and lora_B of every wrapped module, by Hugging Face name (`model.layers.0...lora_A.weight`). */
  tensors: Record<string, HostTensor>;
}

/** Every tensor an adapter of `c` has on a base model of `cfg`: A [r, in] and B [out, r] per module. */
export function loraParams(cfg: LlamaConfig, c: LoraConfig): ParamSpec[] {
  if (c.targets.includes('lm_head') && cfg.tieWordEmbeddings)
    throw DuelError.invalidArgument([
      {
        field: 'target_modules',
        description: "'lm_head' is tied to embed_tokens in this model; duel adapts an untied lm_head only",
      },
    ]);
  const shapes = new Map(llamaParams(cfg).map((p) => [p.name, p.shape]));
  return targetModules(cfg.numLayers, c.targets).flatMap((m) => {
    const [out, inp] = shapes.get(`${m}.weight`)!;
    return [
      { name: `${m}.lora_A.weight`, shape: [c.rank, inp!], init: 'normal' as const },
      { name: `${m}.lora_B.weight`, shape: [out!, c.rank], init: 'zeros' as const },
    ];
  });
}

/**
 * A fresh adapter as PEFT initialises one: A Kaiming-uniform (a = √5, so U(±1/√in)), B zero, so
 * that base + adapter starts equal to the base. Reproducible from `seed`.
 */
export function initAdapter(cfg: LlamaConfig, c: LoraConfig, seed: number): Adapter {
  const next = rng(seed);
  const tensors: Record<string, HostTensor> = {};
  for (const spec of loraParams(cfg, c)) {
    const n = spec.shape[0]! * spec.shape[1]!;
    const data = new Float32Array(n);
    if (spec.init === 'normal') {
      const bound = 1 / Math.sqrt(spec.shape[1]!);
      for (let k = 0; k < n; k++) data[k] = (2 * next() - 1) * bound;
    }
    tensors[spec.name] = { dtype: 'float32', dims: spec.shape, data };
  }
  return { config: c, tensors };
}

/** Reads an adapter directory and checks it against the base model `cfg`. */
export function readAdapterDir(dirPath: string, cfg: LlamaConfig): Adapter {
  const dir = resolve(dirPath);
  const configPath = join(dir, ADAPTER_CONFIG);
  const weightsPath = join(dir, ADAPTER_WEIGHTS);
  for (const p of [configPath, weightsPath])
    if (!existsSync(p))
      throw DuelError.invalidArgument([
        { field: p, description: 'not found (a PEFT LoRA adapter directory has both files)' },
      ]);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(configPath, 'utf8'));
  } catch (e) {
    throw DuelError.invalidArgument([
      { field: configPath, description: `is not JSON: ${(e as Error).message}` },
    ]);
  }
  const config = parseAdapterConfig(json, configPath);
  const { tensors: stored } = readSafetensors(weightsPath);
  const problems: { field: string; description: string }[] = [];
  const tensors: Record<string, HostTensor> = {};
  const found = new Map(
    [...stored].map(([name, t]) => [name.startsWith(PEFT_PREFIX) ? name.slice(PEFT_PREFIX.length) : name, t]),
  );
  for (const spec of loraParams(cfg, config)) {
    const t = found.get(spec.name);
    found.delete(spec.name);
    const peftName = PEFT_PREFIX + spec.name;
    if (!t) {
      problems.push({
        field: peftName,
        description: `missing from ${weightsPath} (the config's targets need it, shape [${spec.shape}])`,
      });
      continue;
    }
    if (t.shape.join() !== spec.shape.join()) {
      problems.push({
        field: peftName,
        description: `has shape [${t.shape}], the base model implies [${spec.shape}] (an adapter for another model size or rank?)`,
      });
      continue;
    }
    if (t.dtype !== 'float32' && t.dtype !== 'float64' && t.dtype !== 'float16')
      problems.push({ field: peftName, description: `is ${t.dtype}; adapter tensors are floats` });
    else
      tensors[spec.name] = {
        dtype: 'float32',
        dims: spec.shape,
        data: t.data instanceof Float32Array ? t.data : Float32Array.from(t.data as Float64Array),
      };
  }
  for (const name of found.keys())
    problems.push({
      field: PEFT_PREFIX + name,
      description: `is not a LoRA tensor of this base model and target list`,
    });
  if (problems.length) throw DuelError.invalidArgument(problems);
  return { config, tensors };
}

/** Writes an adapter directory (built aside, renamed in): PEFT's names and config, and `extraFiles`. */
export function writeAdapterDir(
  dirPath: string,
  adapter: Adapter,
  baseModel: string,
  extraFiles: Record<string, string> = {},
): void {
  const dir = resolve(dirPath);
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    writeFileSync(
      join(tmp, ADAPTER_CONFIG),
      `${JSON.stringify(adapterConfigJson(adapter.config, baseModel), null, 2)}\n`,
    );
    const stored = new Map<string, StoredTensor>();
    for (const [name, t] of Object.entries(adapter.tensors))
      stored.set(PEFT_PREFIX + name, {
        dtype: 'float32',
        shape: t.dims,
        data: t.data instanceof Float32Array ? t.data : Float32Array.from(t.data),
      });
    writeSafetensors(join(tmp, ADAPTER_WEIGHTS), stored, { format: 'pt' });
    for (const [name, text] of Object.entries(extraFiles)) writeFileSync(join(tmp, name), text);
    mkdirSync(dirname(dir), { recursive: true });
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** The base weights with every wrapped W replaced by W + scale · B A (what PEFT's merge_and_unload gives). */
export function mergeAdapter(
  base: Record<string, HostTensor>,
  cfg: LlamaConfig,
  adapter: Adapter,
): Record<string, HostTensor> {
  const scale = loraScale(adapter.config);
  const merged = { ...base };
  const r = adapter.config.rank;
  for (const m of targetModules(cfg.numLayers, adapter.config.targets)) {
    const w = base[`${m}.weight`]!;
    const a = adapter.tensors[`${m}.lora_A.weight`]!.data;
    const b = adapter.tensors[`${m}.lora_B.weight`]!.data;
    const [out, inp] = w.dims as [number, number];
    const data = Float32Array.from(w.data);
    for (let o = 0; o < out; o++)
      for (let k = 0; k < inp; k++) {
        let s = 0;
        for (let j = 0; j < r; j++) s += b[o * r + j]! * a[j * inp + k]!;
        data[o * inp + k]! += scale * s;
      }
    merged[`${m}.weight`] = { dtype: 'float32', dims: w.dims, data };
  }
  return merged;
}
