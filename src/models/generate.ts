/**
 * Batched generation with a KV cache: n samples for each prompt, all rows decoded together.
 * Prompts are left-padded (mask 0, position 0) so every row's next token sits in the last
 * column; a row that drew EOS keeps being fed padding and its outputs are ignored. With a
 * mixture, the reference model reads the same tokens in its own cache and the draw uses the
 * token-level geometric mixture of logits (1 − m)·z_policy + m·z_ref (Nash-MD's π_t^β). A
 * decoder that decodes a generation in one run (Decoder.oneRun, the default on cuda) does so for
 * untruncated sampling without a mixture, with the same draws: each row's stream gives its k-th
 * value to its k-th token either way.
 */
import { DuelError } from '../errors.js';
import { rng } from './common/rng.js';
import type { Decoder, KvCache } from './llama/runner.js';
import { drawToken, entropyOf, logSoftmaxAt, type SamplingOptions, streamSeed } from './sampling.js';

export interface GenerateOptions extends SamplingOptions {
  /** Samples per prompt. */
  n: number;
  maxNewTokens: number;
  seed: number;
  /** Stop a row at any of these; none: always run to maxNewTokens. */
  eosIds: number[];
  padId: number;
  mixture?: { reference: Decoder; coef: number };
  /** Called after each decoding step (for progress). */
  onStep?: (step: number, finishedRows: number, rows: number) => void;
  signal?: AbortSignal;
}

export interface Generation {
  prompt: number;
  sample: number;
  /** Drawn tokens, EOS included when drawn. */
  tokens: number[];
  /** log π_policy(token | prefix) at temperature 1, one per token. */
  logprobs: number[];
  /** The policy's next-token entropy (temperature 1) at each drawn position. */
  entropies: number[];
  finish: 'eos' | 'length';
}

function checkGenerateOptions(o: GenerateOptions, maxPositions: number, longestPrompt: number): void {
  const problems: { field: string; description: string }[] = [];
  const need = (ok: boolean, field: string, description: string) => {
    if (!ok) problems.push({ field, description });
  };
  need(Number.isInteger(o.n) && o.n >= 1, 'n', `must be a positive integer, got ${o.n}`);
  need(
    Number.isInteger(o.maxNewTokens) && o.maxNewTokens >= 1,
    'max_new_tokens',
    `must be a positive integer, got ${o.maxNewTokens}`,
  );
  need(
    Number.isFinite(o.temperature) && o.temperature >= 0,
    'temperature',
    `must be >= 0, got ${o.temperature}`,
  );
  need(Number.isInteger(o.topK) && o.topK >= 0, 'top_k', `must be an integer >= 0, got ${o.topK}`);
  need(o.topP > 0 && o.topP <= 1, 'top_p', `must be in (0, 1], got ${o.topP}`);
  need(Number.isInteger(o.seed), 'seed', `must be an integer, got ${o.seed}`);
  if (o.mixture)
    need(
      o.mixture.coef >= 0 && o.mixture.coef <= 1,
      'mixture_coef',
      `must be in [0, 1], got ${o.mixture.coef}`,
    );
  need(
    longestPrompt + o.maxNewTokens <= maxPositions,
    'max_new_tokens',
    `prompt (${longestPrompt} tokens) + max_new_tokens (${o.maxNewTokens}) exceeds max_position_embeddings ${maxPositions}`,
  );
  if (problems.length > 0) throw DuelError.invalidArgument(problems);
}

export async function generate(
  policy: Decoder,
  prompts: number[][],
  o: GenerateOptions,
): Promise<Generation[]> {
  const cfg = policy.config;
  prompts.forEach((p, i) => {
    if (p.length === 0)
      throw DuelError.invalidArgument([{ field: `prompts[${i}]`, description: 'is empty' }]);
    const badId = p.find((id) => !Number.isInteger(id) || id < 0 || id >= cfg.vocabSize);
    if (badId !== undefined)
      throw DuelError.invalidArgument([
        {
          field: `prompts[${i}]`,
          description: `token id ${badId} is outside the vocabulary [0, ${cfg.vocabSize})`,
        },
      ]);
  });
  const longest = Math.max(...prompts.map((p) => p.length));
  checkGenerateOptions(o, cfg.maxPositions, longest);
  if (o.mixture && o.mixture.reference.config.vocabSize !== cfg.vocabSize)
    throw DuelError.invalidArgument([
      { field: 'mixture_ref', description: 'the reference model has another vocabulary size' },
    ]);

  const rows = prompts.flatMap((p, pi) =>
    Array.from({ length: o.n }, (_, s) => ({ prompt: pi, sample: s, ids: p })),
  );
  const r = rows.length;
  const v = cfg.vocabSize;
  const streams = rows.map((row) => rng(streamSeed(o.seed, row.ids, row.sample)));
  const out: Generation[] = rows.map((row) => ({
    prompt: row.prompt,
    sample: row.sample,
    tokens: [],
    logprobs: [],
    entropies: [],
    finish: 'length',
  }));
  const done = new Array<boolean>(r).fill(false);

  const mask = rows.map((row) => [...new Array(longest - row.ids.length).fill(0), ...row.ids.map(() => 1)]);
  let ids = rows.map((row) => [...new Array(longest - row.ids.length).fill(o.padId), ...row.ids]);
  let positions = rows.map((row) => [
    ...new Array(longest - row.ids.length).fill(0),
    ...row.ids.map((_, i) => i),
  ]);
  const lengths = rows.map((row) => row.ids.length);

  /** Row i's drawn token, its log-prob and entropy, and whether it stops the row (EOS). */
  const take = (i: number, token: number, logprob: number, entropy: number) => {
    out[i]!.tokens.push(token);
    out[i]!.logprobs.push(logprob);
    out[i]!.entropies.push(entropy);
    if (o.eosIds.includes(token)) {
      done[i] = true;
      out[i]!.finish = 'eos';
    }
  };

  // The common case draws inside the graph: B tokens come back instead of B×V logits.
  const inGraph = !o.mixture && (o.topK === 0 || o.topK >= v) && o.topP >= 1;
  if (inGraph && policy.oneRun) {
    if (o.signal?.aborted) throw o.signal.reason ?? new Error('generation cancelled');
    const uniforms = Array.from({ length: o.maxNewTokens }, () => streams.map((next) => next()));
    const drawn = await policy.oneRun({ ids, mask, positions }, uniforms, o.temperature, o);
    drawn.tokens.forEach((step, k) => {
      for (let i = 0; i < r; i++)
        if (!done[i]) take(i, step[i]!, drawn.logprobs[k]![i]!, drawn.entropies[k]![i]!);
    });
    o.onStep?.(drawn.tokens.length, done.filter(Boolean).length, r);
    return out;
  }
  const caches = [await policy.openCache(r), ...(o.mixture ? [await o.mixture.reference.openCache(r)] : [])];
  try {
    for (let step = 0; step < o.maxNewTokens; step++) {
      if (o.signal?.aborted) throw o.signal.reason ?? new Error('generation cancelled');
      const drawn = inGraph
        ? await caches[0]!.stepAndDraw(
            ids,
            mask,
            positions,
            rows.map((_, i) => (done[i] ? 0.5 : streams[i]!())),
            o.temperature,
          )
        : await drawInJs(caches, ids, mask, positions, done, streams, o, v);
      const next: number[][] = [];
      for (let i = 0; i < r; i++) {
        if (done[i]) {
          next.push([o.padId]);
          continue;
        }
        const token = drawn.tokens[i]!;
        take(i, token, drawn.logprobs[i]!, drawn.entropies[i]!);
        next.push([token]);
      }
      const finished = done.filter(Boolean).length;
      o.onStep?.(step + 1, finished, r);
      if (finished === r) break;
      ids = next;
      for (const row of mask) row.push(1);
      positions = lengths.map((len) => [len + step]);
    }
  } finally {
    await Promise.all(caches.map((c) => c.close()));
  }
  return out;
}

/** Logits back from the worker(s), the draw here: truncation (top-k, top-p) and the mixture. */
async function drawInJs(
  caches: KvCache[],
  ids: number[][],
  mask: number[][],
  positions: number[][],
  done: boolean[],
  streams: (() => number)[],
  o: GenerateOptions,
  v: number,
): Promise<{ tokens: number[]; logprobs: number[]; entropies: number[] }> {
  const [zp, zr] = await Promise.all(caches.map((c) => c.step(ids, mask, positions)));
  const tokens: number[] = [];
  const logprobs: number[] = [];
  const entropies: number[] = [];
  for (let i = 0; i < done.length; i++) {
    if (done[i]) {
      tokens.push(-1);
      logprobs.push(0);
      entropies.push(0);
      continue;
    }
    const policyRow = zp!.subarray(i * v, (i + 1) * v);
    let drawFrom: ArrayLike<number> = policyRow;
    if (o.mixture) {
      const m = o.mixture.coef;
      const refRow = zr!.subarray(i * v, (i + 1) * v);
      drawFrom = Float64Array.from(policyRow, (z, k) => (1 - m) * z + m * refRow[k]!);
    }
    const token = drawToken(drawFrom, o, streams[i]!());
    tokens.push(token);
    logprobs.push(logSoftmaxAt(policyRow, token));
    entropies.push(entropyOf(policyRow));
  }
  return { tokens, logprobs, entropies };
}
