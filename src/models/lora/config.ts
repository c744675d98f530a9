/**
 * A LoRA adapter's settings, read from and written to PEFT's `adapter_config.json`, so an adapter
 * moves both ways between duel and `peft.PeftModel`. What duel does not implement (DoRA, trained
 * biases, modules saved whole, per-layer ranks) is refused by its PEFT name rather than ignored:
 * an adapter loaded without it would compute something else than the one that was trained.
 */
import { z } from 'zod';
import { DuelError } from '../../errors.js';

/**
 * The Llama-family linear layers an adapter may wrap, by PEFT's module names: those of every block
 * (PEFT's 'all-linear'), and the LM head, which PEFT leaves out of 'all-linear' but adapts when
 * named (an untied lm_head only).
 */
export const LORA_TARGETS = [
  'q_proj',
  'k_proj',
  'v_proj',
  'o_proj',
  'gate_proj',
  'up_proj',
  'down_proj',
  'lm_head',
] as const;
export type LoraTarget = (typeof LORA_TARGETS)[number];
/** PEFT's 'all-linear' for a causal LM: every block's linear layers, not the output layer. */
export const ALL_LINEAR: readonly LoraTarget[] = LORA_TARGETS.filter((t) => t !== 'lm_head');

export interface LoraConfig {
  rank: number;
  alpha: number;
  targets: LoraTarget[];
  /** Rank-stabilised scaling: alpha/√r instead of alpha/r. */
  rslora: boolean;
  /** PEFT's lora_dropout: applied by PEFT in training only, so inference reads it and ignores it. */
  dropout: number;
}

/** The factor of B·A in y = W x + scale · B A x. */
export const loraScale = (c: LoraConfig): number =>
  c.rslora ? c.alpha / Math.sqrt(c.rank) : c.alpha / c.rank;

const MLP = new Set<LoraTarget>(['gate_proj', 'up_proj', 'down_proj']);

/** The modules (Hugging Face names without `.weight`) a target set wraps, layer by layer, head last. */
export function targetModules(numLayers: number, targets: readonly LoraTarget[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < numLayers; i++)
    for (const t of targets)
      if (t !== 'lm_head') out.push(`model.layers.${i}.${MLP.has(t) ? 'mlp' : 'self_attn'}.${t}`);
  if (targets.includes('lm_head')) out.push('lm_head');
  return out;
}

const empty = (v: unknown) =>
  v === undefined ||
  v === null ||
  (Array.isArray(v) && v.length === 0) ||
  (typeof v === 'object' && Object.keys(v as object).length === 0);

const PeftLora = z.looseObject({
  peft_type: z.literal('LORA', { message: "must be 'LORA' (duel reads LoRA adapters only)" }),
  r: z.number().int().min(1),
  lora_alpha: z.number().positive(),
  target_modules: z.union([z.array(z.string()), z.string()]),
  use_rslora: z.boolean().default(false),
  lora_dropout: z.number().min(0).lt(1).default(0),
  bias: z.string().default('none'),
  task_type: z.string().nullish(),
  base_model_name_or_path: z.string().nullish(),
});

/** Settings PEFT may carry that change what the adapter computes, and duel does not implement. */
const UNSUPPORTED: Record<string, (v: unknown) => boolean> = {
  use_dora: (v) => v === true,
  modules_to_save: (v) => !empty(v),
  layers_to_transform: (v) => !empty(v),
  rank_pattern: (v) => !empty(v),
  alpha_pattern: (v) => !empty(v),
  fan_in_fan_out: (v) => v === true,
};

/** Reads `adapter_config.json`'s contents; every problem names the key (and `source`). */
export function parseAdapterConfig(json: unknown, source: string): LoraConfig {
  const r = PeftLora.safeParse(json);
  if (!r.success)
    throw DuelError.invalidArgument(
      r.error.issues.map((i) => ({
        field: `${source}: ${i.path.join('.') || '(root)'}`,
        description: i.message,
      })),
    );
  const c = r.data;
  const problems: { field: string; description: string }[] = [];
  for (const [key, bad] of Object.entries(UNSUPPORTED))
    if (bad((json as Record<string, unknown>)[key]))
      problems.push({
        field: `${source}: ${key}`,
        description: `is set (${JSON.stringify((json as Record<string, unknown>)[key])}); duel does not implement it`,
      });
  if (c.bias !== 'none')
    problems.push({
      field: `${source}: bias`,
      description: `is '${c.bias}'; duel trains and reads no biases ('none' only)`,
    });
  if (c.task_type && c.task_type !== 'CAUSAL_LM')
    problems.push({
      field: `${source}: task_type`,
      description: `is '${c.task_type}'; duel's decoder is CAUSAL_LM`,
    });
  const names =
    c.target_modules === 'all-linear'
      ? [...ALL_LINEAR]
      : typeof c.target_modules === 'string'
        ? [c.target_modules]
        : c.target_modules;
  const targets = [...new Set(names.map((n) => n.split('.').at(-1)!))];
  for (const t of targets)
    if (!(LORA_TARGETS as readonly string[]).includes(t))
      problems.push({
        field: `${source}: target_modules`,
        description: `'${t}' is not a linear layer of the decoder (${LORA_TARGETS.join(', ')}, or 'all-linear')`,
      });
  if (problems.length) throw DuelError.invalidArgument(problems);
  return {
    rank: c.r,
    alpha: c.lora_alpha,
    targets: LORA_TARGETS.filter((t) => targets.includes(t)),
    rslora: c.use_rslora,
    dropout: c.lora_dropout,
  };
}

/** PEFT's `adapter_config.json` for `c`, as `PeftModel.from_pretrained` reads it. */
export function adapterConfigJson(c: LoraConfig, baseModel: string): Record<string, unknown> {
  return {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: baseModel,
    r: c.rank,
    lora_alpha: c.alpha,
    target_modules: [...c.targets],
    use_rslora: c.rslora,
    lora_dropout: c.dropout,
    bias: 'none',
    fan_in_fan_out: false,
    use_dora: false,
    modules_to_save: null,
    inference_mode: true,
    init_lora_weights: true,
  };
}

/**
 * `rank=8,alpha=16,targets=q_proj+v_proj,rslora` (the --lora flag); targets `all` is every block's
 * linear layers (PEFT's 'all-linear'), `all+lm_head` those and the LM head.
 */
export function parseLoraFlag(raw: string, field = '--lora'): LoraConfig {
  const fields: Record<string, string> = {};
  for (const part of raw.split(',')) {
    const at = part.indexOf('=');
    if (at < 0) fields[part.trim()] = 'true';
    else fields[part.slice(0, at).trim()] = part.slice(at + 1).trim();
  }
  const known = new Set(['rank', 'alpha', 'targets', 'rslora']);
  const unknown = Object.keys(fields).filter((k) => !known.has(k));
  if (unknown.length)
    throw DuelError.invalidArgument([
      { field, description: `unknown key(s) ${unknown.join(', ')} (rank, alpha, targets, rslora)` },
    ]);
  const targets = (fields.targets ?? 'q_proj+v_proj')
    .split('+')
    .flatMap((t): string[] => (t === 'all' ? [...ALL_LINEAR] : [t]));
  return parseAdapterConfig(
    {
      peft_type: 'LORA',
      r: Number(fields.rank ?? 8),
      lora_alpha: Number(fields.alpha ?? 16),
      target_modules: targets,
      use_rslora: fields.rslora === 'true',
    },
    field,
  );
}
