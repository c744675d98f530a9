/**
 * The file parsers against mutated files: model directories (config.json and the safetensors
 * weights), tokenizer.json, SentencePiece's spm.model, round records (JSONL) and run specs. Each mutated file must either
 * load or be refused with a DuelError of a deliberate code that names the file or field; a crash
 * (any other exception, or INTERNAL/UNKNOWN) fails the test and names the seed and the input.
 * Byte mutations come from the RPC fuzzer's generator; JSON files also get structural ones.
 * `DUEL_FUZZ_SEED=N` replays another seed; the figures go to docs/RELIABILITY.md.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkRecords } from '../../src/algorithms/train-round.js';
import { readRecords } from '../../src/cli/records.js';
import { Code, codeName, DuelError } from '../../src/errors.js';
import { initLlamaWeights } from '../../src/models/llama/weights.js';
import { loadModelDir, saveModelDir } from '../../src/models/model-dir.js';
import { SentencePieceTokenizer } from '../../src/models/sentencepiece.js';
import { TextTokenizer, wordLevelTokenizer } from '../../src/models/tokenizer.js';
import { readRunSpec } from '../../src/platform/run-spec.js';
import { mutate, mutateJson, rng } from '../helpers/fuzz.js';
import { tinyLlamaConfig } from '../helpers/model-fixtures.js';
import { writeTinyRun, writeTinySpec } from '../helpers/tiny-run.js';
import { fileTempDir } from '../helpers/tmp.js';

const SEED = Number(process.env.DUEL_FUZZ_SEED ?? 20261124);
const PER_PARSER = 400;
const root = fileTempDir('duel-fuzz-files-');

const DELIBERATE = new Set<Code>([
  Code.INVALID_ARGUMENT,
  Code.FAILED_PRECONDITION,
  Code.NOT_FOUND,
  Code.OUT_OF_RANGE,
  Code.RESOURCE_EXHAUSTED,
]);

interface Tally {
  tried: number;
  loaded: number;
  refused: number;
  crashes: string[];
}

/** Runs `load` on `count` mutations of `valid` written to `path`; counts outcomes. */
async function fuzz(
  name: string,
  valid: Buffer,
  path: string,
  load: () => unknown,
  json: boolean,
  count = PER_PARSER,
): Promise<Tally> {
  const rand = rng(SEED ^ [...name].reduce((h, c) => (h * 31 + c.charCodeAt(0)) | 0, 7));
  const t: Tally = { tried: 0, loaded: 0, refused: 0, crashes: [] };
  for (let i = 0; i < count; i++) {
    const input =
      json && rand() < 0.5
        ? Buffer.from(JSON.stringify(mutateJson(JSON.parse(valid.toString('utf8')), rand)))
        : mutate(valid, rand);
    writeFileSync(path, input);
    t.tried++;
    try {
      await load();
      t.loaded++;
    } catch (e) {
      if (e instanceof DuelError && DELIBERATE.has(e.code) && e.message.length > 0) t.refused++;
      else
        t.crashes.push(
          `${name} #${i} (seed ${SEED}): ${e instanceof DuelError ? codeName(e.code) : (e as Error).name}: ${(e as Error).message.slice(0, 300)} <- ${input.subarray(0, 200).toString('utf8')}`,
        );
    }
  }
  // Visible in the test log; docs/RELIABILITY.md quotes it.
  console.log(
    `fuzz ${name}: ${t.tried} inputs, ${t.loaded} loaded, ${t.refused} refused, ${t.crashes.length} crashes`,
  );
  return t;
}

describe('mutated files are loaded or refused with a deliberate error, never a crash', () => {
  const model = join(root, 'model');
  const cfg = tinyLlamaConfig(1);
  saveModelDir(model, cfg, initLlamaWeights(cfg, 1));
  const tok = wordLevelTokenizer(['a', 'b', 'c', 'd', 'e']);
  writeFileSync(join(model, 'tokenizer.json'), JSON.stringify(tok.tokenizerJson));
  writeFileSync(join(model, 'tokenizer_config.json'), JSON.stringify(tok.tokenizerConfig));
  const original = (f: string) => readFileSync(join(model, f));
  const files = {
    config: original('config.json'),
    weights: original('model.safetensors'),
    tokenizer: original('tokenizer.json'),
  };
  const restore = () => {
    for (const [f, b] of [
      ['config.json', files.config],
      ['model.safetensors', files.weights],
      ['tokenizer.json', files.tokenizer],
    ] as const)
      writeFileSync(join(model, f), b);
  };

  it('model config.json', async () => {
    restore();
    const t = await fuzz(
      'config.json',
      files.config,
      join(model, 'config.json'),
      () => loadModelDir(model),
      true,
    );
    expect(t.crashes).toEqual([]);
  });

  it('safetensors weights (header and data)', async () => {
    restore();
    const t = await fuzz(
      'model.safetensors',
      files.weights,
      join(model, 'model.safetensors'),
      () => loadModelDir(model),
      false,
    );
    expect(t.crashes).toEqual([]);
    expect(t.refused).toBeGreaterThan(0);
  });

  it('tokenizer.json', async () => {
    restore();
    const t = await fuzz(
      'tokenizer.json',
      files.tokenizer,
      join(model, 'tokenizer.json'),
      () => TextTokenizer.fromDir(model).encode('a b c'),
      true,
    );
    expect(t.crashes).toEqual([]);
  });

  it('SentencePiece spm.model (the published PairRM tokenizer)', async () => {
    const dir = join(root, 'spm');
    mkdirSync(dir, { recursive: true });
    const valid = readFileSync(new URL('../fixtures/spm/spm.model', import.meta.url));
    // Each load instantiates SentencePiece's WebAssembly: fewer inputs than the JSON parsers get.
    const t = await fuzz(
      'spm.model',
      valid,
      join(dir, 'spm.model'),
      async () => (await SentencePieceTokenizer.fromDir(dir)).encode('the cat sat on the mat'),
      false,
      PER_PARSER / 4,
    );
    expect(t.crashes).toEqual([]);
    expect(t.refused).toBeGreaterThan(0);
  });

  it('round records (JSONL)', async () => {
    restore();
    const dir = join(root, 'records');
    mkdirSync(dir);
    const valid = Buffer.from(
      [
        {
          prompt_ids: [2, 4],
          completion_ids: [
            [5, 3],
            [6, 7, 3],
          ],
          prefs: [
            [0.5, 0.7],
            [0.3, 0.5],
          ],
        },
        {
          prompt: 'a b',
          completions: ['c d', 'e'],
          prefs: [
            [0.5, 0.1],
            [0.9, 0.5],
          ],
        },
      ]
        .map((r) => JSON.stringify(r))
        .join('\n'),
    );
    const file = join(dir, 'round.jsonl');
    const t = await fuzz(
      'round.jsonl',
      valid,
      file,
      () => checkRecords(readRecords(file, model, 'round'), cfg.vocabSize),
      false,
    );
    // Structural mutations line by line, too: JSONL is JSON per line.
    const lines = valid.toString('utf8').split('\n');
    const t2 = await fuzz(
      'round.jsonl (structure)',
      Buffer.from(lines[0]!),
      file,
      () => checkRecords(readRecords(file, model, 'round'), cfg.vocabSize),
      true,
    );
    expect([...t.crashes, ...t2.crashes]).toEqual([]);
  });

  it('run specs', async () => {
    const dir = join(root, 'spec');
    mkdirSync(dir);
    writeTinyRun(dir);
    const file = writeTinySpec(dir, 'spec');
    const t = await fuzz('run spec', readFileSync(file), file, () => readRunSpec(file), true);
    expect(t.crashes).toEqual([]);
  });
});
