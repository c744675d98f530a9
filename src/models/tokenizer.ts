/**
 * Tokenizers in Hugging Face's formats: tokenizer.json read by @huggingface/tokenizers (the
 * tokenizer of transformers.js), chat templates from tokenizer_config.json rendered by
 * @huggingface/jinja, and SentencePiece's spm.model where a directory has only that
 * (./sentencepiece.ts). duel also writes a small word-level tokenizer.json (the testbed's
 * vocabulary) in the schema the Rust `tokenizers` library reads, so Python loads it unchanged.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type { Tokenizer } from '@huggingface/tokenizers';
import { DuelError } from '../errors.js';
import { SentencePieceTokenizer } from './sentencepiece.js';

// The tokenizer and chat-template libraries load with the first tokenizer built, not with every
// process that imports this module (a service that only sees token ids never needs them).
const load = createRequire(import.meta.url);
const tokenizers = () => load('@huggingface/tokenizers') as typeof import('@huggingface/tokenizers');
const jinja = () => load('@huggingface/jinja') as typeof import('@huggingface/jinja');

export interface SpecialTokens {
  unk: string;
  pad: string;
  bos: string;
  eos: string;
}

const DEFAULT_SPECIALS: SpecialTokens = { unk: '<unk>', pad: '<pad>', bos: '<s>', eos: '</s>' };

/**
 * A word-level tokenizer.json: specials first (ids 0..3 in the order unk, pad, bos, eos), then
 * `words`; text splits on whitespace and decodes joined by spaces.
 */
export function wordLevelTokenizer(words: string[], specials: SpecialTokens = DEFAULT_SPECIALS) {
  const all = [specials.unk, specials.pad, specials.bos, specials.eos, ...words];
  const seen = new Set<string>();
  for (const w of all) {
    if (seen.has(w)) throw new Error(`wordLevelTokenizer: '${w}' appears twice`);
    if (/\s/.test(w) || w === '')
      throw new Error(`wordLevelTokenizer: '${w}' is empty or contains whitespace`);
    seen.add(w);
  }
  const vocab = Object.fromEntries(all.map((w, i) => [w, i]));
  const added = [specials.unk, specials.pad, specials.bos, specials.eos].map((content, id) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: 'WhitespaceSplit' },
    post_processor: null,
    decoder: { type: 'WordPiece', prefix: '##', cleanup: false },
    model: { type: 'WordLevel', vocab, unk_token: specials.unk },
  };
  const tokenizerConfig = {
    tokenizer_class: 'PreTrainedTokenizerFast',
    unk_token: specials.unk,
    pad_token: specials.pad,
    bos_token: specials.bos,
    eos_token: specials.eos,
    clean_up_tokenization_spaces: false,
    model_max_length: 1_000_000,
  };
  return { tokenizerJson, tokenizerConfig, ids: { unk: 0, pad: 1, bos: 2, eos: 3 } };
}

export interface ChatMessage {
  role: string;
  content: string;
}

export class TextTokenizer {
  private constructor(
    private readonly tokenizer: Tokenizer,
    private readonly config: Record<string, unknown>,
  ) {}

  static fromJson(tokenizerJson: object, tokenizerConfig: object = {}): TextTokenizer {
    return new TextTokenizer(
      new (tokenizers().Tokenizer)(tokenizerJson, tokenizerConfig),
      tokenizerConfig as Record<string, unknown>,
    );
  }

  /** Reads tokenizer.json (and tokenizer_config.json when present) from a model directory. */
  static fromDir(dir: string): TextTokenizer {
    const read = (name: string, required: boolean): object | undefined => {
      const path = join(dir, name);
      if (!existsSync(path)) {
        if (required) throw DuelError.invalidArgument([{ field: path, description: 'file not found' }]);
        return undefined;
      }
      try {
        return JSON.parse(readFileSync(path, 'utf8')) as object;
      } catch (e) {
        throw DuelError.invalidArgument([
          { field: path, description: `not valid JSON: ${(e as Error).message}` },
        ]);
      }
    };
    const json = read('tokenizer.json', true)!;
    try {
      return TextTokenizer.fromJson(json, read('tokenizer_config.json', false) ?? {});
    } catch (e) {
      throw DuelError.invalidArgument([
        {
          field: join(dir, 'tokenizer.json'),
          description: `not a tokenizer this library reads: ${(e as Error).message}`,
        },
      ]);
    }
  }

  /** The directory's tokenizer, or undefined when it has no tokenizer.json (ids-only models). */
  static tryFromDir(dir: string): TextTokenizer | undefined {
    return existsSync(join(dir, 'tokenizer.json')) ? TextTokenizer.fromDir(dir) : undefined;
  }

  encode(text: string): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: number[], skipSpecial = true): string {
    return this.tokenizer.decode(ids, { skip_special_tokens: skipSpecial });
  }

  tokenId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  /** Whether tokenizer_config.json carries a chat template. */
  get hasChatTemplate(): boolean {
    return typeof this.config.chat_template === 'string';
  }

  /** Renders tokenizer_config.json's chat template (transformers' apply_chat_template, as text). */
  applyChatTemplate(messages: ChatMessage[], addGenerationPrompt = true): string {
    const template = this.config.chat_template;
    if (typeof template !== 'string')
      throw DuelError.failedPrecondition('this tokenizer has no chat_template in tokenizer_config.json');
    const special = (k: string) => {
      const v = this.config[k];
      return typeof v === 'string' ? v : (v as { content?: string } | undefined)?.content;
    };
    return new (jinja().Template)(template).render({
      messages,
      add_generation_prompt: addGenerationPrompt,
      bos_token: special('bos_token') ?? '',
      eos_token: special('eos_token') ?? '',
    });
  }
}

/** What encodes text for a model directory: its tokenizer.json, else its SentencePiece spm.model. */
export type AnyTokenizer = TextTokenizer | SentencePieceTokenizer;

/** The directory's tokenizer (tokenizer.json first, then spm.model), or undefined with neither. */
export async function tokenizerOfDir(dir: string): Promise<AnyTokenizer | undefined> {
  return TextTokenizer.tryFromDir(dir) ?? (await SentencePieceTokenizer.tryFromDir(dir));
}
