/**
 * SentencePiece tokenizers as published beside DeBERTa-v3 and PairRM: `spm.model` plus the added
 * tokens that transformers keeps beside it (added_tokens.json, or tokenizer_config.json's
 * added_tokens_decoder). The model is run by Google's SentencePiece itself, compiled to WebAssembly
 * (@sctg/sentencepiece-js), so normalization (the precompiled nmt_nfkc charsmap), whitespace and
 * the unigram/BPE segmentation are the reference's, not a re-implementation.
 *
 * What transformers adds on top, done here: text is split on the added tokens first (each maps to
 * its id) and every other piece of text is encoded on its own, with SentencePiece's dummy prefix —
 * what DebertaV2Tokenizer and its fast twin (Strip, Precompiled, Metaspace) both produce.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DuelError } from '../errors.js';
import { importEsm } from '../esm-import.js';

// The library (4 MB, its WebAssembly inline) is an ES module only, kept out of the bundles, and
// loads with the first SentencePiece tokenizer, not with every process that imports this module.
type Spm = typeof import('@sctg/sentencepiece-js');
let library: Promise<Spm> | undefined;
const spmLibrary = () => {
  library ??= importEsm('@sctg/sentencepiece-js') as Promise<Spm>;
  return library;
};

/** The added tokens (content → id) a model directory declares beside its spm.model. */
export function addedTokensOf(dir: string): Map<string, number> {
  const tokens = new Map<string, number>();
  const json = (name: string): unknown => {
    const path = join(dir, name);
    if (!existsSync(path)) return undefined;
    try {
      return JSON.parse(readFileSync(path, 'utf8'));
    } catch (e) {
      throw DuelError.invalidArgument([
        { field: path, description: `not valid JSON: ${(e as Error).message}` },
      ]);
    }
  };
  const decoder = (json('tokenizer_config.json') as { added_tokens_decoder?: unknown } | undefined)
    ?.added_tokens_decoder;
  if (decoder && typeof decoder === 'object')
    for (const [id, t] of Object.entries(decoder)) {
      const content = (t as { content?: unknown } | null)?.content;
      if (typeof content === 'string' && /^\d+$/.test(id)) tokens.set(content, Number(id));
    }
  const added = json('added_tokens.json');
  if (added && typeof added === 'object')
    for (const [content, id] of Object.entries(added))
      if (Number.isInteger(id) && (id as number) >= 0) tokens.set(content, id as number);
  return tokens;
}

type Processor = InstanceType<Spm['SentencePieceProcessor']>;

/** The id SentencePiece gives `piece` (its unknown id for a piece it does not know). */
function pieceId(spm: Processor, piece: string): number {
  const view = new spm.sentencepiece.StringView(piece);
  const absl = view.getView();
  try {
    return spm.processor.PieceToId(absl) as number;
  } finally {
    absl.delete();
    view.delete();
  }
}

export class SentencePieceTokenizer {
  /** Added tokens, longest first: where two overlap, the longer one is the token. */
  private readonly splitOrder: string[];
  private readonly addedById: Map<number, string>;

  private constructor(
    private readonly spm: Processor,
    private readonly added: Map<string, number>,
    /** The id SentencePiece gives any piece it does not know. */
    private readonly unkId: number,
  ) {
    this.splitOrder = [...added.keys()].sort((a, b) => b.length - a.length);
    this.addedById = new Map([...added].map(([t, id]) => [id, t]));
  }

  /** The directory's spm.model with its added tokens; an unreadable model is INVALID_ARGUMENT. */
  static async fromDir(dir: string): Promise<SentencePieceTokenizer> {
    const path = join(dir, 'spm.model');
    if (!existsSync(path)) throw DuelError.invalidArgument([{ field: path, description: 'file not found' }]);
    const { SentencePieceProcessor } = await spmLibrary();
    const spm = new SentencePieceProcessor();
    await spm.load(path);
    const status = spm.processor.status();
    const problem = status.ToString() as string;
    status.delete?.();
    if (problem !== 'OK')
      throw DuelError.invalidArgument([
        { field: path, description: `not a SentencePiece model SentencePiece reads: ${problem}` },
      ]);
    // No piece is spelt with a NUL, so its id is the unknown id.
    return new SentencePieceTokenizer(spm, addedTokensOf(dir), pieceId(spm, '\u0000'));
  }

  /** The directory's SentencePiece tokenizer, or undefined when it has no spm.model. */
  static async tryFromDir(dir: string): Promise<SentencePieceTokenizer | undefined> {
    return existsSync(join(dir, 'spm.model')) ? SentencePieceTokenizer.fromDir(dir) : undefined;
  }

  encode(text: string): number[] {
    const out: number[] = [];
    let rest = text;
    while (rest.length > 0) {
      let at = -1;
      let token = '';
      for (const t of this.splitOrder) {
        const i = rest.indexOf(t);
        if (i >= 0 && (at < 0 || i < at)) [at, token] = [i, t];
      }
      const plain = at < 0 ? rest : rest.slice(0, at);
      if (plain.length > 0) out.push(...this.spm.encodeIds(plain));
      if (at < 0) break;
      out.push(this.added.get(token)!);
      rest = rest.slice(at + token.length);
    }
    return out;
  }

  decode(ids: number[], skipSpecial = true): string {
    const parts: string[] = [];
    let run: number[] = [];
    const flush = () => {
      if (run.length) parts.push(this.spm.decodeIds(run as unknown as Int32Array) as string);
      run = [];
    };
    for (const id of ids) {
      const token = this.addedById.get(id);
      if (token === undefined) run.push(id);
      else {
        flush();
        if (!skipSpecial) parts.push(token);
      }
    }
    flush();
    return parts.join(' ');
  }

  /** An added token's id, or a piece's; undefined for what the model does not know. */
  tokenId(token: string): number | undefined {
    const added = this.added.get(token);
    if (added !== undefined) return added;
    const id = pieceId(this.spm, token);
    return id === this.unkId ? undefined : id;
  }
}
