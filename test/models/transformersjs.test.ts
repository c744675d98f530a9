/**
 * Interop: a duel model exported in the Optimum layout is loaded by transformers.js (the
 * Hugging Face library, not duel code) and greedy-decodes the same tokens as duel.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AutoModelForCausalLM, env, Tensor } from '@huggingface/transformers';
import { afterAll, describe, expect, it } from 'vitest';
import { Runtime } from '../../src/engine/index.js';
import { generate } from '../../src/models/generate.js';
import { parseLlamaConfig } from '../../src/models/llama/config.js';
import { exportDecoderOnnx } from '../../src/models/llama/graphs.js';
import { DecoderRunner } from '../../src/models/llama/runner.js';
import { loadModelDir, saveModelDir } from '../../src/models/model-dir.js';
import { weights } from '../helpers/model-fixtures.js';
import { fileTempDir } from '../helpers/tmp.js';

const root = fileTempDir('duel-tjs-');
const runtime = new Runtime({ workers: 1, intraOpThreads: 1 });
afterAll(async () => {
  await runtime.close();
});

describe('transformers.js reads duel models', () => {
  it.each([
    ['llama, GQA, untied', { model_type: 'llama', num_key_value_heads: 2 }],
    ['qwen2, QKV bias, tied', { model_type: 'qwen2', num_key_value_heads: 1, tie_word_embeddings: true }],
    ['qwen3, q/k norm, head_dim 8', { model_type: 'qwen3', num_key_value_heads: 2, head_dim: 8 }],
  ])('%s: greedy decoding gives the same tokens', async (name, extra) => {
    const cfg = parseLlamaConfig({
      vocab_size: 23,
      hidden_size: 16,
      intermediate_size: 32,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      max_position_embeddings: 64,
      eos_token_id: 0,
      ...extra,
    });
    const id = name.split(',')[0]!;
    const dir = join(root, id);
    saveModelDir(dir, cfg, weights(cfg, 2, 'float32', 10));
    const m = loadModelDir(dir);
    mkdirSync(join(dir, 'onnx'));
    writeFileSync(join(dir, 'onnx', 'model.onnx'), exportDecoderOnnx(m.config, m.weights).bytes);

    env.allowRemoteModels = false;
    env.localModelPath = `${root}/`;
    const theirs = await AutoModelForCausalLM.from_pretrained(id, {
      local_files_only: true,
      dtype: 'fp32',
      device: 'cpu',
    });
    const runner = await DecoderRunner.create(runtime, m.config, m.weights);
    for (const prompt of [
      [5, 9, 2],
      [17, 3, 3, 8, 1],
    ]) {
      const out = (await theirs.generate({
        input_ids: new Tensor('int64', BigInt64Array.from(prompt, BigInt), [1, prompt.length]),
        max_new_tokens: 8,
        do_sample: false,
      })) as Tensor;
      const tokens = (out.tolist() as bigint[][])[0]!.map(Number).slice(prompt.length);
      const [ours] = await generate(runner, [prompt], {
        n: 1,
        maxNewTokens: 8,
        temperature: 0,
        topK: 0,
        topP: 1,
        seed: 0,
        eosIds: cfg.eosTokenIds,
        padId: 0,
      });
      expect(new Set(tokens).size).toBeGreaterThan(1); // a chain worth comparing, not one repeated token
      expect(tokens).toEqual(ours!.tokens);
    }
    await theirs.dispose();
    await runner.release();
  });
});
