/** The smallest run that exercises the whole suite: tiny random policy and judge, six prompts, a 2-round SPPO spec. */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { initJudgeWeights } from '../../src/models/judge/model.js';
import { saveJudgeDir } from '../../src/models/judge/runner.js';
import { initLlamaWeights } from '../../src/models/llama/weights.js';
import { saveModelDir } from '../../src/models/model-dir.js';
import { tinyJudgeConfig, tinyLlamaConfig } from './model-fixtures.js';

/** Writes `policy/`, `judge/` and `prompts.jsonl` under `root`. */
export function writeTinyRun(root: string): void {
  const cfg = tinyLlamaConfig(0);
  saveModelDir(join(root, 'policy'), cfg, initLlamaWeights(cfg, 3));
  saveJudgeDir(join(root, 'judge'), tinyJudgeConfig(), initJudgeWeights(tinyJudgeConfig(), 4));
  writeFileSync(
    join(root, 'prompts.jsonl'),
    [[1, 2], [3], [4, 5, 6], [7, 8], [9], [10, 11]].map((p) => JSON.stringify({ prompt_ids: p })).join('\n'),
  );
}

/** A run spec file over writeTinyRun's files (paths relative to `root`); `extra` overrides keys. */
export function writeTinySpec(root: string, name: string, extra: Record<string, unknown> = {}): string {
  const file = join(root, `${name}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      name,
      algorithm: 'sppo',
      hyperparameters: { k: 3, eta: 2 },
      policy: 'policy',
      judge: 'judge',
      prompts: 'prompts.jsonl',
      rounds: 2,
      seed: 7,
      eval_samples_per_prompt: 2,
      sampling: { max_new_tokens: 4, temperature: 1 },
      optimizer: { name: 'sgd', learning_rate: 0.05, steps: 2, batch_size: 3 },
      ...extra,
    }),
  );
  return file;
}
