/** `duel judge init` (a fresh PairRM-style judge directory) and `duel judge compare` (K×K prefs of JSONL records). */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Command } from 'commander';
import { z } from 'zod';
import { DuelError } from '../../errors.js';
import { parseJudgeConfig } from '../../models/judge/config.js';
import { loadJudgeDir } from '../../models/judge/load.js';
import { initJudgeWeights } from '../../models/judge/model.js';
import { saveJudgeDir } from '../../models/judge/runner.js';
import { isPairRMConfig, parsePairRMConfig } from '../../models/pairrm/config.js';
import { initPairRMWeights } from '../../models/pairrm/model.js';
import { savePairRMDir } from '../../models/pairrm/runner.js';
import { isRewardConfig, parseRewardConfig } from '../../models/reward/config.js';
import { initRewardWeights } from '../../models/reward/model.js';
import { saveRewardDir } from '../../models/reward/runner.js';
import { tokenizerOfDir } from '../../models/tokenizer.js';
import { intFlag } from '../flags.js';
import { readJsonl, writeJsonl } from '../jsonl.js';
import { progress } from '../progress.js';
import { cliRuntime } from '../runtime.js';

const tokenIds = z.array(z.number().int().nonnegative());
const atLeastTwo = 'needs at least two completions to compare';
/** Ids, or text the judge's own tokenizer encodes (tokenizer.json, or PairRM's spm.model). */
const CompareRecord = z
  .looseObject({
    prompt_ids: tokenIds.optional(),
    prompt: z.string().optional(),
    completion_ids: z.array(tokenIds).min(2, atLeastTwo).optional(),
    completions: z.array(z.string()).min(2, atLeastTwo).optional(),
  })
  .refine((r) => r.prompt_ids !== undefined || r.prompt !== undefined, {
    path: ['prompt_ids'],
    message: 'needs prompt_ids or prompt',
  })
  .refine((r) => r.completion_ids !== undefined || r.completions !== undefined, {
    path: ['completion_ids'],
    message: 'needs completion_ids or completions',
  });

function readJsonFile(flag: string, path: string): unknown {
  if (!existsSync(path)) throw DuelError.invalidArgument([{ field: flag, description: `${path} not found` }]);
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw DuelError.invalidArgument([
      { field: flag, description: `not valid JSON: ${(e as Error).message}` },
    ]);
  }
}

export function registerJudge(program: Command): void {
  const judge = program
    .command('judge')
    .description('judges: PairRM-style pairwise judges and Bradley-Terry reward models');

  judge
    .command('init')
    .description(
      'a randomly initialised judge directory from a config.json: model_type duel_pairrm, DebertaV2PairRM (PairRM), or a *ForSequenceClassification reward model',
    )
    .requiredOption('--config <file>', 'judge config.json')
    .requiredOption('--out <dir>', 'the judge directory to write')
    .option('--seed <n>', 'initialisation seed', intFlag('--seed', 0), 0)
    .option('--tokenizer <file>', 'a tokenizer.json to include')
    .action((o: { config: string; out: string; seed: number; tokenizer?: string }) => {
      const json = readJsonFile('--config', o.config);
      const extraFiles: Record<string, string> = {};
      if (o.tokenizer) {
        if (!existsSync(o.tokenizer))
          throw DuelError.invalidArgument([
            { field: '--tokenizer', description: `${o.tokenizer} not found` },
          ]);
        extraFiles['tokenizer.json'] = readFileSync(o.tokenizer, 'utf8');
        const tc = join(dirname(o.tokenizer), 'tokenizer_config.json');
        if (existsSync(tc)) extraFiles['tokenizer_config.json'] = readFileSync(tc, 'utf8');
      }
      if (isPairRMConfig(json)) {
        const cfg = parsePairRMConfig(json, o.config);
        savePairRMDir(o.out, cfg, initPairRMWeights(cfg, o.seed), { extraFiles });
        process.stderr.write(`wrote ${o.out} (PairRM, ${cfg.encoder.numLayers} DeBERTa-v2 layers)\n`);
        return;
      }
      if (isRewardConfig(json)) {
        const cfg = parseRewardConfig(json, o.config);
        saveRewardDir(o.out, cfg, initRewardWeights(cfg, o.seed), { extraFiles });
        process.stderr.write(
          `wrote ${o.out} (${cfg.backbone.modelType} reward model, ${cfg.backbone.numLayers} layers)\n`,
        );
        return;
      }
      const cfg = parseJudgeConfig(json, o.config);
      saveJudgeDir(o.out, cfg, initJudgeWeights(cfg, o.seed), { extraFiles });
      process.stderr.write(`wrote ${o.out} (judge, ${cfg.encoder.numLayers} encoder layers)\n`);
    });

  judge
    .command('compare')
    .description('fills prefs (K×K), winrates, scores (Bradley-Terry) and best of each record')
    .requiredOption(
      '--judge <dir>',
      'judge directory: duel_pairrm (model.safetensors or onnx/model.onnx), PairRM (model.safetensors or pytorch_model.bin) or a *ForSequenceClassification reward model',
    )
    .requiredOption(
      '--input <file>',
      "JSONL records with prompt_ids or prompt (text), and completion_ids or completions (text, through the judge's tokenizer.json or spm.model)",
    )
    .option('--quiet', 'no progress lines')
    .action(async (o: { judge: string; input: string; quiet?: boolean }) => {
      const records = readJsonl(o.input, CompareRecord);
      const runtime = cliRuntime({ workers: 1 });
      try {
        const { judge: runner } = await loadJudgeDir(runtime, o.judge);
        const text = records.some((r) => r.prompt_ids === undefined || r.completion_ids === undefined);
        const tokenizer = text ? await tokenizerOfDir(o.judge) : undefined;
        const encode = (s: string, line: number, field: string) => {
          if (!tokenizer)
            throw DuelError.invalidArgument([
              {
                field: `${o.input}: record ${line}: ${field}`,
                description: `is text, and ${o.judge} has no tokenizer.json or spm.model to encode it (give ${field}_ids)`,
              },
            ]);
          return tokenizer.encode(s);
        };
        const p = progress('judge', records.length, o.quiet);
        for (const [i, r] of records.entries()) {
          const promptIds = r.prompt_ids ?? encode(r.prompt!, i + 1, 'prompt');
          const completionIds = r.completion_ids ?? r.completions!.map((c) => encode(c, i + 1, 'completion'));
          const { prefs, winrates, scores } = await runner.compare(promptIds, completionIds);
          writeJsonl({
            ...r,
            prefs,
            winrates,
            scores,
            best: scores.indexOf(Math.max(...scores)),
          });
          p.tick(i + 1);
        }
        p.finish();
      } finally {
        await runtime.close();
      }
    });
}
