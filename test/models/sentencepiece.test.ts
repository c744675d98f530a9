/**
 * The published PairRM's tokenizer: spm.model through SentencePiece (WebAssembly) against the ids
 * the reference SentencePiece gives (test/fixtures/spm/make.py wrote both the model and the ids),
 * and PairRM's input built from them against LLM-Blender's tokenize_pair on the same ids.
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parsePairRMConfig } from '../../src/models/pairrm/config.js';
import { pairrmSequence } from '../../src/models/pairrm/model.js';
import { readPairRMConfig } from '../../src/models/pairrm/runner.js';
import { SentencePieceTokenizer } from '../../src/models/sentencepiece.js';
import { tokenizerOfDir } from '../../src/models/tokenizer.js';
import { refused } from '../helpers/refusal.js';
import { fileTempDir } from '../helpers/tmp.js';

const FIXTURE = new URL('../fixtures/spm/', import.meta.url).pathname;
const expected = JSON.parse(readFileSync(join(FIXTURE, 'expected.json'), 'utf8')) as {
  vocab_size: number;
  encoded: { text: string; ids: number[] }[];
  pairs: {
    source: string;
    candidate1: string;
    candidate2: string;
    source_max_length: number;
    candidate_max_length: number;
    ids: number[];
  }[];
};
const root = fileTempDir('duel-spm-');

/** A PairRM config.json with no special-token ids of its own: they come from the added tokens. */
const pairrmJson = (lengths: { source_max_length?: number; candidate_max_length?: number } = {}) => ({
  architectures: ['DebertaV2PairRM'],
  model_type: 'deberta-v2',
  vocab_size: expected.vocab_size + 4,
  hidden_size: 8,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  intermediate_size: 16,
  ...lengths,
});

describe('SentencePiece (spm.model as PairRM publishes it)', () => {
  it("encodes text to the reference SentencePiece's ids: nmt_nfkc, extra whitespace, unknown glyphs", async () => {
    const tok = await SentencePieceTokenizer.fromDir(FIXTURE);
    for (const { text, ids } of expected.encoded) expect(tok.encode(text), text).toEqual(ids);
    expect(tok.decode(tok.encode('the cat sat'))).toBe('the cat sat');
  });

  it('splits on the added tokens first and encodes the text around them on its own', async () => {
    const tok = await SentencePieceTokenizer.fromDir(FIXTURE);
    const [cat, hello] = [expected.encoded[0]!, expected.encoded[1]!];
    const source = tok.tokenId('<|source|>')!;
    expect(source).toBe(expected.vocab_size + 1);
    expect(tok.encode(`<|source|>${cat.text}<|candidate1|>${hello.text}`)).toEqual([
      source,
      ...cat.ids,
      tok.tokenId('<|candidate1|>'),
      ...hello.ids,
    ]);
    expect(tok.tokenId('[CLS]')).toBe(1);
    expect(tok.tokenId('no such piece')).toBeUndefined();
    expect(tok.decode([source, ...cat.ids], false)).toBe(`<|source|> ${cat.text}`);
  });

  it("builds PairRM's input as LLM-Blender's tokenize_pair does, truncation included", async () => {
    for (const pair of expected.pairs) {
      const dir = join(root, `pairrm-${pair.source_max_length}`);
      mkdirSync(dir, { recursive: true });
      copyFileSync(join(FIXTURE, 'spm.model'), join(dir, 'spm.model'));
      copyFileSync(join(FIXTURE, 'added_tokens.json'), join(dir, 'added_tokens.json'));
      // [CLS] and [SEP] as transformers saves them beside an spm.model.
      writeFileSync(
        join(dir, 'tokenizer_config.json'),
        JSON.stringify({ added_tokens_decoder: { '1': { content: '[CLS]' }, '2': { content: '[SEP]' } } }),
      );
      const cfg = readPairRMConfig(
        dir,
        pairrmJson({
          source_max_length: pair.source_max_length,
          candidate_max_length: pair.candidate_max_length,
        }),
      );
      const tok = (await tokenizerOfDir(dir))!;
      const { ids } = pairrmSequence(cfg, {
        prompt: tok.encode(pair.source),
        first: tok.encode(pair.candidate1),
        second: tok.encode(pair.candidate2),
      });
      expect(ids).toEqual(pair.ids);
    }
  });

  it('refuses a file SentencePiece cannot read, naming it', async () => {
    const dir = join(root, 'broken');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'spm.model'), 'not a model');
    const err = await refused(SentencePieceTokenizer.fromDir(dir));
    expect(err.message).toContain(`${join(dir, 'spm.model')}: not a SentencePiece model SentencePiece reads`);
    // Without tokenizer.json or added tokens, PairRM's config must name its special ids itself.
    expect(() => parsePairRMConfig(pairrmJson())).toThrow(/source_prefix_id/);
  });
});
