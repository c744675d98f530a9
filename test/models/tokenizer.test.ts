/** Tokenizers: the word-level tokenizer.json duel writes, read back through @huggingface/tokenizers. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TextTokenizer, wordLevelTokenizer } from '../../src/models/tokenizer.js';

describe('word-level tokenizer', () => {
  const { tokenizerJson, tokenizerConfig, ids } = wordLevelTokenizer(['red', 'green', 'blue', 'x']);

  it('puts the specials first and maps words after them, unknown words to <unk>', () => {
    const t = TextTokenizer.fromJson(tokenizerJson, tokenizerConfig);
    expect(ids).toEqual({ unk: 0, pad: 1, bos: 2, eos: 3 });
    expect(t.encode('red  blue\nx purple </s>')).toEqual([4, 6, 7, 0, 3]);
    expect(t.decode([4, 6, 7, 3])).toBe('red blue x');
    expect(t.decode([2, 4, 3], false)).toBe('<s> red </s>');
    expect(t.tokenId('green')).toBe(5);
  });

  it('is read from a model directory, with the chat template of tokenizer_config.json', () => {
    const dir = mkdtempSync(join(tmpdir(), 'duel-tok-'));
    try {
      writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson));
      const template =
        '{% for m in messages %}{{ bos_token }}{{ m.role }} {{ m.content }} {% endfor %}{% if add_generation_prompt %}assistant{% endif %}';
      writeFileSync(
        join(dir, 'tokenizer_config.json'),
        JSON.stringify({ ...tokenizerConfig, chat_template: template }),
      );
      const t = TextTokenizer.fromDir(dir);
      expect(t.applyChatTemplate([{ role: 'user', content: 'red x' }])).toBe('<s>user red x assistant');
      writeFileSync(join(dir, 'tokenizer.json'), '{"model": ');
      expect(() => TextTokenizer.fromDir(dir)).toThrow(/tokenizer.json: not valid JSON/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses duplicate or whitespace-bearing words', () => {
    expect(() => wordLevelTokenizer(['a', 'a'])).toThrow(/'a' appears twice/);
    expect(() => wordLevelTokenizer(['a b'])).toThrow(/contains whitespace/);
  });
});
