/**
 * `duel model init` (a fresh model directory from a config.json), `duel model logprobs` (summed
 * completion log-probs of JSONL records), `duel model export-onnx` (the decoder in the
 * transformers.js / Optimum layout), `duel model average` (iterate averaging of checkpoints),
 * `duel model merge` (a LoRA adapter merged into its base) and `duel sample` (batched generation).
 * `--adapter` puts a LoRA adapter in PEFT's layout on the model for log-probs and sampling.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Command } from 'commander';
import { z } from 'zod';
import type { ComputeDtype } from '../../engine/index.js';
import { DuelError } from '../../errors.js';
import { averageModelDirs } from '../../models/average.js';
import { generate } from '../../models/generate.js';
import { parseLlamaConfig } from '../../models/llama/config.js';
import { exportDecoderOnnx } from '../../models/llama/graphs.js';
import { LogprobRunner } from '../../models/llama/logprob-runner.js';
import { DecoderRunner } from '../../models/llama/runner.js';
import { initLlamaWeights } from '../../models/llama/weights.js';
import { mergeAdapter, readAdapterDir } from '../../models/lora/adapter.js';
import { loadModelDir, saveModelDir } from '../../models/model-dir.js';
import { TextTokenizer } from '../../models/tokenizer.js';
import { intFlag, numberFlag } from '../flags.js';
import { readJsonl, writeJsonl } from '../jsonl.js';
import { progress } from '../progress.js';
import { cliRuntime, dtypeOption } from '../runtime.js';

const tokenIds = z.array(z.number().int().nonnegative());

const LogprobRecord = z.looseObject({
  prompt_ids: tokenIds.min(1),
  completion_ids: z.array(tokenIds).min(1),
});

const PromptRecord = z
  .looseObject({ prompt_ids: tokenIds.min(1).optional(), prompt: z.string().min(1).optional() })
  .refine((r) => r.prompt_ids !== undefined || r.prompt !== undefined, {
    message: 'needs prompt_ids or prompt',
  });

export function registerModel(program: Command): void {
  const model = program.command('model').description('create, score and export models');

  model
    .command('init')
    .description('a randomly initialised model directory from a Hugging Face config.json')
    .requiredOption('--arch <name>', 'architecture family (llama: model_type llama, qwen2, qwen3 or mistral)')
    .requiredOption('--config <file>', 'a config.json')
    .requiredOption('--out <dir>', 'the model directory to write')
    .option('--seed <n>', 'initialisation seed', intFlag('--seed', 0), 0)
    .option(
      '--tokenizer <file>',
      'a tokenizer.json to include (tokenizer_config.json beside it is copied too)',
    )
    .action((o: { arch: string; config: string; out: string; seed: number; tokenizer?: string }) => {
      if (o.arch !== 'llama')
        throw DuelError.invalidArgument([
          { field: '--arch', description: `unknown architecture '${o.arch}' (known: llama)` },
        ]);
      if (!existsSync(o.config))
        throw DuelError.invalidArgument([{ field: '--config', description: `${o.config} not found` }]);
      if (o.tokenizer && !existsSync(o.tokenizer))
        throw DuelError.invalidArgument([{ field: '--tokenizer', description: `${o.tokenizer} not found` }]);
      let json: unknown;
      try {
        json = JSON.parse(readFileSync(o.config, 'utf8'));
      } catch (e) {
        throw DuelError.invalidArgument([
          { field: '--config', description: `not valid JSON: ${(e as Error).message}` },
        ]);
      }
      const cfg = parseLlamaConfig(json, o.config);
      const extraFiles: Record<string, string> = {};
      if (o.tokenizer) {
        extraFiles['tokenizer.json'] = readFileSync(o.tokenizer, 'utf8');
        const tc = join(dirname(o.tokenizer), 'tokenizer_config.json');
        if (existsSync(tc)) extraFiles['tokenizer_config.json'] = readFileSync(tc, 'utf8');
      }
      saveModelDir(o.out, cfg, initLlamaWeights(cfg, o.seed), { extraFiles });
      process.stderr.write(
        `wrote ${o.out} (${cfg.modelType}, ${cfg.numLayers} layers, vocab ${cfg.vocabSize})\n`,
      );
    });

  model
    .command('logprobs')
    .description(
      'summed log-prob of each completion: JSONL records with prompt_ids and completion_ids (K per prompt)',
    )
    .requiredOption('--model <dir>', 'model directory')
    .requiredOption('--input <file>', 'JSONL records')
    .option('--adapter <dir>', 'a LoRA adapter (PEFT layout) on the model')
    .option('--batch-size <n>', 'sequences per forward pass', intFlag('--batch-size', 1), 32)
    .option('--quiet', 'no progress lines')
    .action(
      async (o: { model: string; input: string; adapter?: string; batchSize: number; quiet?: boolean }) => {
        const records = readJsonl(o.input, LogprobRecord);
        const m = loadModelDir(o.model);
        const adapter = o.adapter ? readAdapterDir(o.adapter, m.config) : undefined;
        const runtime = cliRuntime({ workers: 1 });
        try {
          const runner = await LogprobRunner.create(runtime, m.config, m.weights, adapter);
          const p = progress('logprobs', records.length, o.quiet);
          for (const [i, r] of records.entries()) {
            const scored = await runner.logprobs(
              r.completion_ids.map((c) => ({ promptIds: r.prompt_ids, completionIds: c })),
              o.batchSize,
            );
            writeJsonl({ ...r, logprobs: scored.map((s) => s.summed) });
            p.tick(i + 1);
          }
          p.finish();
        } finally {
          await runtime.close();
        }
      },
    );

  model
    .command('export-onnx')
    .description(
      'the decoder as onnx/model.onnx in the Optimum layout (input_ids, attention_mask, position_ids, past_key_values.N.* → logits, present.N.*), loadable by transformers.js',
    )
    .requiredOption('--model <dir>', 'model directory')
    .option(
      '--out <dir>',
      'where to write (default: the model directory); config and tokenizer files are copied along',
    )
    .action((o: { model: string; out?: string }) => {
      const m = loadModelDir(o.model);
      const out = o.out ?? o.model;
      mkdirSync(join(out, 'onnx'), { recursive: true });
      const onnx = exportDecoderOnnx(m.config, m.weights);
      const target = join(out, 'onnx', 'model.onnx');
      writeFileSync(`${target}.tmp`, onnx.bytes);
      renameSync(`${target}.tmp`, target);
      if (out !== o.model) {
        for (const f of [
          'config.json',
          'tokenizer.json',
          'tokenizer_config.json',
          'generation_config.json',
        ]) {
          if (existsSync(join(o.model, f))) copyFileSync(join(o.model, f), join(out, f));
        }
      }
      process.stderr.write(
        `wrote ${target} (${(onnx.bytes.length / 2 ** 20).toFixed(1)} MiB, ${onnx.nodeCount} nodes)\n`,
      );
    });

  model
    .command('merge')
    .description(
      'a LoRA adapter (PEFT layout) merged into its base model: W + scale·B·A, a full model directory',
    )
    .requiredOption('--model <dir>', 'the base model directory')
    .requiredOption(
      '--adapter <dir>',
      'the adapter directory (adapter_config.json, adapter_model.safetensors)',
    )
    .requiredOption('--out <dir>', 'the model directory to write (replaced only once complete)')
    .action((o: { model: string; adapter: string; out: string }) => {
      const m = loadModelDir(o.model);
      const adapter = readAdapterDir(o.adapter, m.config);
      saveModelDir(o.out, m.config, mergeAdapter(m.weights, m.config, adapter), { tokenizerFrom: o.model });
      process.stderr.write(
        `wrote ${o.out}: ${o.model} with the rank-${adapter.config.rank} adapter on ${adapter.config.targets.join(', ')} merged in\n`,
      );
    });

  model
    .command('average')
    .description(
      "the uniform average of several checkpoints' weights as one model directory (iterate averaging over rounds)",
    )
    .argument('<models...>', 'model directories of one architecture')
    .requiredOption('--out <dir>', 'the model directory to write (replaced only once complete)')
    .action((models: string[], o: { out: string }) => {
      averageModelDirs(models, o.out);
      process.stderr.write(`wrote ${o.out}: the mean of ${models.length} checkpoints\n`);
    });

  program
    .command('sample')
    .description(
      'n completions per prompt (JSONL with prompt_ids or prompt text), one output record per prompt',
    )
    .requiredOption('--model <dir>', 'model directory')
    .requiredOption('--prompts <file>', 'JSONL prompts')
    .option('--adapter <dir>', 'a LoRA adapter (PEFT layout) on the model')
    .option('-n, --n <k>', 'samples per prompt', intFlag('-n', 1), 1)
    .option(
      '--temperature <t>',
      '0 = greedy',
      numberFlag('--temperature', (n) => n >= 0, 'must be >= 0'),
      1,
    )
    .option('--top-k <k>', '0 = off', intFlag('--top-k', 0), 0)
    .option(
      '--top-p <p>',
      '1 = off',
      numberFlag('--top-p', (n) => n > 0 && n <= 1, 'must be in (0, 1]'),
      1,
    )
    .option('--max-new-tokens <n>', 'tokens to generate at most', intFlag('--max-new-tokens', 1), 32)
    .option('--seed <n>', 'makes sampling reproducible', intFlag('--seed', 0), 0)
    .option('--mixture-ref <dir>', 'sample from the geometric mixture with this reference model')
    .option(
      '--mixture-coef <m>',
      'weight m of the reference logits',
      numberFlag('--mixture-coef', (n) => n >= 0 && n <= 1, 'must be in [0, 1]'),
      0,
    )
    .option('--batch-size <n>', 'prompts decoded together', intFlag('--batch-size', 1), 16)
    .option(...dtypeOption('what decoding computes in (float16: half the weights and cache)'))
    .option('--quiet', 'no progress lines')
    .action(
      async (o: {
        model: string;
        prompts: string;
        dtype?: ComputeDtype;
        adapter?: string;
        n: number;
        temperature: number;
        topK: number;
        topP: number;
        maxNewTokens: number;
        seed: number;
        mixtureRef?: string;
        mixtureCoef: number;
        batchSize: number;
        quiet?: boolean;
      }) => {
        const records = readJsonl(o.prompts, PromptRecord);
        const m = loadModelDir(o.model);
        const adapter = o.adapter ? readAdapterDir(o.adapter, m.config) : undefined;
        const tokenizer = existsSync(join(o.model, 'tokenizer.json'))
          ? TextTokenizer.fromDir(o.model)
          : undefined;
        const prompts = records.map((r, i) => {
          if (r.prompt_ids) return r.prompt_ids;
          if (!tokenizer)
            throw DuelError.invalidArgument([
              {
                field: `${o.prompts}:${i + 1}: prompt`,
                description: 'text prompts need a tokenizer.json in the model directory',
              },
            ]);
          return tokenizer.encode(r.prompt!);
        });
        const runtime = cliRuntime({ workers: 1, ...(o.dtype ? { dtype: o.dtype } : {}) });
        try {
          const policy = await DecoderRunner.create(runtime, m.config, m.weights, adapter);
          const ref = o.mixtureRef ? loadModelDir(o.mixtureRef) : undefined;
          const reference = ref ? await DecoderRunner.create(runtime, ref.config, ref.weights) : undefined;
          const p = progress('sample', records.length, o.quiet);
          for (let start = 0; start < records.length; start += o.batchSize) {
            const chunk = prompts.slice(start, start + o.batchSize);
            const gens = await generate(policy, chunk, {
              n: o.n,
              maxNewTokens: o.maxNewTokens,
              temperature: o.temperature,
              topK: o.topK,
              topP: o.topP,
              seed: o.seed,
              eosIds: m.config.eosTokenIds,
              padId: m.config.padTokenId ?? 0,
              ...(reference ? { mixture: { reference, coef: o.mixtureCoef } } : {}),
            });
            chunk.forEach((ids, i) => {
              const mine = gens.filter((g) => g.prompt === i);
              writeJsonl({
                ...records[start + i],
                prompt_ids: ids,
                completion_ids: mine.map((g) => g.tokens),
                ...(tokenizer ? { completions: mine.map((g) => tokenizer.decode(g.tokens)) } : {}),
                logprobs: mine.map((g) => g.logprobs.reduce((a, b) => a + b, 0)),
                token_logprobs: mine.map((g) => g.logprobs),
                finish: mine.map((g) => g.finish),
              });
            });
            p.tick(Math.min(records.length, start + o.batchSize));
          }
          p.finish();
        } finally {
          await runtime.close();
        }
      },
    );
}
