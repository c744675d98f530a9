/** Model directories: Hugging Face layout round trips, shards, half precision, clear errors, safe replace. */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { serializeSafetensors, toBfloat16 } from '../../src/engine/index.js';
import { floatToHalf, halfToFloat } from '../../src/models/common/half.js';
import { parseLlamaConfig } from '../../src/models/llama/config.js';
import { initLlamaWeights } from '../../src/models/llama/weights.js';
import { loadModelDir, saveModelDir } from '../../src/models/model-dir.js';
import { tempDirs } from '../helpers/tmp.js';

const cfg = parseLlamaConfig({
  model_type: 'llama',
  vocab_size: 13,
  hidden_size: 8,
  intermediate_size: 12,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  eos_token_id: 3,
});
const tmp = tempDirs('duel-model-');

describe('model directories', () => {
  it('round-trips config and weights in float32 exactly', () => {
    const dir = join(tmp(), 'm');
    const w = initLlamaWeights(cfg, 4);
    saveModelDir(dir, cfg, w);
    expect(readdirSync(dir).sort()).toEqual(['config.json', 'model.safetensors']);
    const hf = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    expect(hf).toMatchObject({
      model_type: 'llama',
      architectures: ['LlamaForCausalLM'],
      num_key_value_heads: 1,
    });
    const back = loadModelDir(dir);
    expect(back.config).toEqual(cfg);
    for (const [k, t] of Object.entries(w)) expect(back.weights[k]!.data).toEqual(t.data);
  });

  it('stores float16 on disk and widens it on load', () => {
    const dir = join(tmp(), 'm');
    const w = initLlamaWeights(cfg, 4);
    saveModelDir(dir, cfg, w, { dtype: 'float16' });
    const back = loadModelDir(dir);
    const t = w['model.layers.0.mlp.up_proj.weight']!;
    const b = back.weights['model.layers.0.mlp.up_proj.weight']!;
    expect(b.dtype).toBe('float32');
    for (let i = 0; i < t.data.length; i++) expect(b.data[i]).toBe(halfToFloat(floatToHalf(t.data[i]!)));
  });

  it('stores bfloat16 on disk (round to nearest even) and widens it on load', () => {
    expect([...toBfloat16(Float32Array.of(1, -2, 1 + 2 ** -8, 1 + 3 * 2 ** -8))]).toEqual([
      0x3f80, 0xc000, 0x3f80, 0x3f82,
    ]);
    const dir = join(tmp(), 'm');
    const w = initLlamaWeights(cfg, 4);
    saveModelDir(dir, cfg, w, { dtype: 'bfloat16' });
    const header = readFileSync(join(dir, 'model.safetensors'));
    expect(header.toString('utf8', 8, 400)).toContain('"dtype":"BF16"');
    const back = loadModelDir(dir);
    const t = w['model.embed_tokens.weight']!;
    const wide = new Float32Array(new Uint32Array(Array.from(toBfloat16(t.data), (b) => b << 16)).buffer);
    expect(back.weights['model.embed_tokens.weight']!.data).toEqual(wide);
  });

  it('reads sharded checkpoints through model.safetensors.index.json', () => {
    const dir = tmp();
    const w = initLlamaWeights(cfg, 5);
    writeFileSync(join(dir, 'config.json'), readFileSync(join(saveTo(w), 'config.json')));
    const names = Object.keys(w);
    const shards = [names.slice(0, 5), names.slice(5)];
    const weightMap: Record<string, string> = {};
    shards.forEach((part, i) => {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      const m = new Map(
        part.map((n) => [n, { dtype: 'float32' as const, shape: w[n]!.dims, data: w[n]!.data }]),
      );
      writeFileSync(join(dir, file), serializeSafetensors(m));
      for (const n of part) weightMap[n] = file;
    });
    writeFileSync(
      join(dir, 'model.safetensors.index.json'),
      JSON.stringify({ metadata: {}, weight_map: weightMap }),
    );
    const back = loadModelDir(dir);
    for (const [k, t] of Object.entries(w)) expect(back.weights[k]!.data).toEqual(t.data);
  });

  function saveTo(w: ReturnType<typeof initLlamaWeights>) {
    const dir = join(tmp(), 'src');
    saveModelDir(dir, cfg, w);
    return dir;
  }

  it('names the tensor that is missing, mis-shaped or unexpected', () => {
    const w = initLlamaWeights(cfg, 6);
    const dir = saveTo(w);
    const rewrite = (
      edit: (m: Map<string, { dtype: 'float32'; shape: number[]; data: Float32Array }>) => void,
    ) => {
      const m = new Map(
        Object.entries(w).map(([n, t]) => [
          n,
          { dtype: 'float32' as const, shape: t.dims, data: t.data as Float32Array },
        ]),
      );
      edit(m);
      writeFileSync(join(dir, 'model.safetensors'), serializeSafetensors(m));
    };
    rewrite((m) => m.delete('model.layers.1.self_attn.k_proj.weight'));
    expect(() => loadModelDir(dir)).toThrow(
      /missing tensor 'model.layers.1.self_attn.k_proj.weight' \(shape \[4,8\]\)/,
    );
    rewrite((m) =>
      m.set('model.norm.weight', { dtype: 'float32', shape: [4, 2], data: new Float32Array(8) }),
    );
    expect(() => loadModelDir(dir)).toThrow(
      /tensor 'model.norm.weight' has shape \[4,2\], the config implies \[8\]/,
    );
    rewrite((m) =>
      m.set('model.layers.9.mlp.up_proj.weight', { dtype: 'float32', shape: [1], data: new Float32Array(1) }),
    );
    expect(() => loadModelDir(dir)).toThrow(/unexpected tensor 'model.layers.9.mlp.up_proj.weight'/);
    writeFileSync(join(dir, 'config.json'), '{"model_type": "gpt2"}');
    expect(() => loadModelDir(dir)).toThrow(/model_type/);
  });

  it('replaces an existing directory only with a complete one', () => {
    const w = initLlamaWeights(cfg, 7);
    const dir = saveTo(w);
    const before = readFileSync(join(dir, 'model.safetensors'));
    const broken = { ...w };
    delete broken['model.norm.weight'];
    expect(() => saveModelDir(dir, cfg, broken)).toThrow(/no weights for 'model.norm.weight'/);
    expect(readFileSync(join(dir, 'model.safetensors'))).toEqual(before);
    saveModelDir(dir, cfg, initLlamaWeights(cfg, 8));
    expect(readFileSync(join(dir, 'model.safetensors'))).not.toEqual(before);
    expect(readdirSync(join(dir, '..')).filter((f) => f.includes('.tmp-') || f.includes('.old-'))).toEqual(
      [],
    );
  });
});

describe('half precision', () => {
  it('converts like numpy: exact halves, round-to-even, subnormals, saturation', () => {
    expect(floatToHalf(1)).toBe(0x3c00);
    expect(floatToHalf(-2)).toBe(0xc000);
    expect(floatToHalf(65504)).toBe(0x7bff);
    expect(floatToHalf(1e6)).toBe(0x7c00);
    expect(floatToHalf(2 ** -24)).toBe(0x0001);
    expect(floatToHalf(2 ** -26)).toBe(0); // below half the smallest subnormal
    expect(floatToHalf(1 + 2 ** -11)).toBe(0x3c00); // a tie rounds to the even 1.0
    expect(floatToHalf(1 + 3 * 2 ** -11)).toBe(0x3c02); // a tie rounds up to even
    expect(Number.isNaN(halfToFloat(floatToHalf(Number.NaN)))).toBe(true);
    for (let h = 0; h < 0x7c00; h += 37) expect(floatToHalf(halfToFloat(h))).toBe(h);
  });
});
