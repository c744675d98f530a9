/** Generation: the KV cache against full forwards, greedy determinism, sampling distributions, seeds. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Runtime } from '../../src/engine/index.js';
import { rng } from '../../src/models/common/rng.js';
import { type GenerateOptions, generate } from '../../src/models/generate.js';
import { parseLlamaConfig } from '../../src/models/llama/config.js';
import { DecoderRunner } from '../../src/models/llama/runner.js';
import type { HostTensor } from '../../src/models/llama/weights.js';
import { initAdapter } from '../../src/models/lora/adapter.js';
import { parseLoraFlag } from '../../src/models/lora/config.js';
import { samplingDistribution } from '../../src/models/sampling.js';
import { weights } from '../helpers/model-fixtures.js';
import { referenceLogits } from './llama-reference.js';

const cfg = parseLlamaConfig({
  model_type: 'qwen2',
  vocab_size: 11,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 64,
  rope_theta: 100,
});

const runtime = new Runtime({ workers: 1, intraOpThreads: 1 });
let w64: Record<string, HostTensor>;
let policy: DecoderRunner;
let reference: DecoderRunner;
let refW64: Record<string, HostTensor>;
const f32 = (w: Record<string, HostTensor>) =>
  Object.fromEntries(
    Object.entries(w).map(([k, t]) => [
      k,
      { ...t, dtype: 'float32' as const, data: Float32Array.from(t.data) },
    ]),
  );

beforeAll(async () => {
  // Milder than the fixture's default so the next-token distribution is neither flat nor one-hot.
  w64 = weights(cfg, 21, 'float64', 2.5);
  refW64 = weights(cfg, 99, 'float64', 2.5);
  policy = await DecoderRunner.create(runtime, cfg, f32(w64));
  reference = await DecoderRunner.create(runtime, cfg, f32(refW64));
});
afterAll(() => runtime.close());

const base: GenerateOptions = {
  n: 1,
  maxNewTokens: 6,
  temperature: 0,
  topK: 0,
  topP: 1,
  seed: 1,
  eosIds: [],
  padId: 0,
};

function relErr(got: ArrayLike<number>, want: number[]): number {
  const scale = Math.max(...want.map(Math.abs));
  return Math.max(...want.map((x, i) => Math.abs(x - got[i]!))) / scale;
}

describe('decoding with a KV cache', () => {
  it('reproduces the full-sequence logits at every position, left-padded rows included', async () => {
    const seqs = [
      [3, 1, 4, 1, 5, 9, 2, 6],
      [2, 7, 1, 8, 2, 8, 1, 8],
    ];
    const promptLens = [3, 5];
    const cache = await policy.openCache(2);
    const width = Math.max(...promptLens);
    const ids = seqs.map((s, b) => [
      ...new Array(width - promptLens[b]!).fill(0),
      ...s.slice(0, promptLens[b]),
    ]);
    const mask = promptLens.map((n) => [...new Array(width - n).fill(0), ...new Array(n).fill(1)]);
    let positions = promptLens.map((n) => [
      ...new Array(width - n).fill(0),
      ...Array.from({ length: n }, (_, i) => i),
    ]);
    let logits = await cache.step(ids, mask, positions);
    for (let t = 0; ; t++) {
      for (let b = 0; b < 2; b++) {
        const upto = promptLens[b]! + t;
        const want = referenceLogits(cfg, w64, seqs[b]!.slice(0, upto)).at(-1)!;
        expect(relErr(logits.subarray(b * 11, (b + 1) * 11), want)).toBeLessThan(1e-5);
      }
      if (promptLens[1]! + t >= 8) break;
      const next = seqs.map((s, b) => [s[promptLens[b]! + t]!]);
      for (const row of mask) row.push(1);
      positions = promptLens.map((n) => [n + t]);
      logits = await cache.step(next, mask, positions);
    }
    await cache.close();
  });

  it('greedy decoding is deterministic and follows the reference argmax chain', async () => {
    const prompt = [5, 3, 8];
    const [a] = await generate(policy, [prompt], base);
    const [b] = await generate(policy, [prompt], base);
    expect(a!.tokens).toEqual(b!.tokens);
    const seq = [...prompt];
    for (let i = 0; i < base.maxNewTokens; i++) {
      const z = referenceLogits(cfg, w64, seq).at(-1)!;
      seq.push(z.indexOf(Math.max(...z)));
    }
    expect(a!.tokens).toEqual(seq.slice(prompt.length));
    // logprobs are the policy's log-softmax at temperature 1 of each drawn token
    const z0 = referenceLogits(cfg, w64, prompt).at(-1)!;
    const lse = Math.log(z0.reduce((s, x) => s + Math.exp(x), 0));
    expect(a!.logprobs[0]).toBeCloseTo(z0[a!.tokens[0]!]! - lse, 4);
    // and the entropy of the policy's next-token distribution, in the graph and in JavaScript
    const entropy = -z0.reduce((acc, x) => acc + Math.exp(x - lse) * (x - lse), 0);
    expect(a!.entropies[0]).toBeCloseTo(entropy, 4);
    const [viaJs] = await generate(policy, [prompt], { ...base, topK: 3 });
    expect(viaJs!.entropies[0]).toBeCloseTo(entropy, 4);
  });

  it('stops a row at EOS and keeps decoding the others', async () => {
    const prompt = [5, 3, 8];
    const [free] = await generate(policy, [prompt], base);
    const eos = free!.tokens[2]!;
    const firstEos = free!.tokens.indexOf(eos);
    const [stopped] = await generate(policy, [prompt], { ...base, eosIds: [eos] });
    expect(stopped!.finish).toBe('eos');
    expect(stopped!.tokens).toEqual(free!.tokens.slice(0, firstEos + 1));
  });
});

/** A sampling distribution as a dense vector over the vocabulary. */
function dense({ ids, probs }: { ids: number[]; probs: number[] }): number[] {
  const out = new Array<number>(cfg.vocabSize).fill(0);
  for (const [i, id] of ids.entries()) out[id] = probs[i]!;
  return out;
}

/** Pearson's χ² of observed counts against probabilities, bins with expected < 5 merged. */
function chiSquare(counts: number[], probs: number[]): { stat: number; df: number } {
  const total = counts.reduce((a, b) => a + b, 0);
  let stat = 0;
  let df = -1;
  let [restObs, restExp] = [0, 0];
  probs.forEach((p, i) => {
    const e = p * total;
    if (e < 5) {
      restObs += counts[i]!;
      restExp += e;
      return;
    }
    stat += (counts[i]! - e) ** 2 / e;
    df += 1;
  });
  if (restExp >= 5) {
    stat += (restObs - restExp) ** 2 / restExp;
    df += 1;
  } else if (restObs > 3 * restExp + 5) stat = Number.POSITIVE_INFINITY; // mass where there should be none
  return { stat, df };
}

// χ² critical values at p = 0.001: a correct sampler fails this one time in a thousand.
const CRITICAL = [0, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88, 29.59];

async function firstTokenCounts(opts: Partial<GenerateOptions>, n: number) {
  const gens = await generate(policy, [[4, 2]], { ...base, n, maxNewTokens: 1, ...opts });
  const counts = new Array<number>(11).fill(0);
  for (const g of gens) counts[g.tokens[0]!]! += 1;
  return counts;
}

describe('sampling', () => {
  const z = () => referenceLogits(cfg, w64, [4, 2]).at(-1)!;

  it.each([
    ['temperature 0.8', { temperature: 0.8, topK: 0, topP: 1 }],
    ['temperature 1.3, top-k 4', { temperature: 1.3, topK: 4, topP: 1 }],
    ['temperature 1, top-p 0.8', { temperature: 1, topK: 0, topP: 0.8 }],
  ])('%s: frequencies pass a χ² test against the tempered, truncated distribution', async (_n, o) => {
    const counts = await firstTokenCounts(o, 3000);
    const full = dense(samplingDistribution(z(), o));
    expect(full.filter((p) => p > 0).length).toBeGreaterThan(1);
    const { stat, df } = chiSquare(counts, full);
    expect(df).toBeGreaterThan(0);
    expect(stat).toBeLessThan(CRITICAL[df]!);
    // truncated tokens are never drawn
    expect(counts.filter((_, id) => full[id] === 0)).toEqual(full.filter((p) => p === 0));
  });

  it('mixture sampling draws from softmax((1 − m)·z_policy + m·z_ref)', async () => {
    const m = 0.6;
    const gens = await generate(policy, [[4, 2]], {
      ...base,
      temperature: 1,
      n: 3000,
      maxNewTokens: 1,
      mixture: { reference, coef: m },
    });
    const counts = new Array<number>(11).fill(0);
    for (const g of gens) counts[g.tokens[0]!]! += 1;
    const zr = referenceLogits(cfg, refW64, [4, 2]).at(-1)!;
    const mixed = z().map((x, i) => (1 - m) * x + m * zr[i]!);
    const full = dense(samplingDistribution(mixed, { temperature: 1, topK: 0, topP: 1 }));
    const { stat, df } = chiSquare(counts, full);
    expect(stat).toBeLessThan(CRITICAL[df]!);
    // and not from the policy alone
    const alone = dense(samplingDistribution(z(), { temperature: 1, topK: 0, topP: 1 }));
    expect(chiSquare(counts, alone).stat).toBeGreaterThan(CRITICAL[10]!);
  });

  it('a seed reproduces each sample whatever shares its batch; another seed does not', async () => {
    const o = { ...base, temperature: 1, n: 3 };
    const alone = await generate(policy, [[1, 2, 3]], o);
    const batched = await generate(
      policy,
      [
        [7, 7],
        [1, 2, 3],
      ],
      o,
    );
    expect(batched.filter((g) => g.prompt === 1).map((g) => g.tokens)).toEqual(alone.map((g) => g.tokens));
    const other = await generate(policy, [[1, 2, 3]], { ...o, seed: 2 });
    expect(other.map((g) => g.tokens)).not.toEqual(alone.map((g) => g.tokens));
  });

  it('refuses bad options naming the field', async () => {
    await expect(generate(policy, [[1]], { ...base, topP: 0 })).rejects.toThrow(/top_p: must be in \(0, 1\]/);
    await expect(generate(policy, [[1, 99]], base)).rejects.toThrow(/prompts\[0\]: token id 99 is outside/);
    await expect(generate(policy, [[1]], { ...base, maxNewTokens: 64 })).rejects.toThrow(
      /exceeds max_position_embeddings 64/,
    );
  });
});

/** The tokens of generations. */
const tokensOf = (gens: { tokens: number[] }[]) => gens.map((g) => g.tokens);

describe('a whole generation in one run (DecoderOptions.oneRun, the default on cuda)', () => {
  it('draws the tokens, log-probs and entropies of the step-by-step decoder, stops included', async () => {
    const oneRun = await DecoderRunner.create(runtime, cfg, f32(w64), undefined, { oneRun: true });
    expect(policy.oneRun).toBeUndefined();
    expect(oneRun.oneRun).toBeDefined();
    try {
      const prompts = [[5, 3, 8], [2], [7, 7, 1, 9]];
      for (const temperature of [1, 0]) {
        const o = { ...base, n: 3, temperature, maxNewTokens: 7, seed: 4 };
        const free = await generate(policy, prompts, o);
        // An id some rows draw early: those rows stop, the others go on; and one that stops all.
        const eos = free[0]!.tokens[1]!;
        for (const eosIds of [[], [eos], [...new Set(free.map((g) => g.tokens[0]!))]]) {
          const want = await generate(policy, prompts, { ...o, eosIds });
          const steps: number[] = [];
          const got = await generate(oneRun, prompts, { ...o, eosIds, onStep: (s) => steps.push(s) });
          expect(got.map((g) => [g.tokens, g.finish])).toEqual(want.map((g) => [g.tokens, g.finish]));
          for (const [i, g] of got.entries()) {
            expect(relErr(g.logprobs, want[i]!.logprobs)).toBeLessThan(1e-5);
            expect(relErr(g.entropies, want[i]!.entropies)).toBeLessThan(1e-5);
          }
          // One run, which stops when every row has: the longest row's length in steps.
          expect(steps).toEqual([Math.max(...want.map((g) => g.tokens.length))]);
        }
        expect(free.some((g) => g.tokens.length === 7)).toBe(true);
      }
      // With a LoRA adapter, as inputs of the one graph every adapter decodes through.
      const lora = initAdapter(cfg, parseLoraFlag('rank=2,alpha=4,targets=all'), 5);
      const next = rng(6);
      for (const [name, t] of Object.entries(lora.tensors))
        if (name.endsWith('lora_B.weight')) t.data = t.data.map(() => next() - 0.5);
      const adapted = await DecoderRunner.forAdapters(runtime, cfg, f32(w64), lora.config.targets, {
        oneRun: true,
      });
      const stepwise = await DecoderRunner.create(runtime, cfg, f32(w64), lora);
      try {
        await adapted.setAdapter('a', lora);
        const o = { ...base, n: 2, temperature: 1, seed: 8 };
        const [got, want] = [
          await generate(adapted.withAdapter('a'), prompts, o),
          await generate(stepwise, prompts, o),
        ];
        expect(got.map((g) => g.tokens)).toEqual(want.map((g) => g.tokens));
        expect(got.map((g) => g.tokens)).not.toEqual(tokensOf(await generate(policy, prompts, o)));
      } finally {
        await Promise.all([adapted.release(), stepwise.release()]);
      }
      // Top-k, top-p and a mixture draw on the host, step by step, as before.
      const truncated = { ...base, temperature: 1, topK: 3, maxNewTokens: 4 };
      expect(await generate(oneRun, [[5, 3]], truncated)).toEqual(
        await generate(policy, [[5, 3]], truncated),
      );
    } finally {
      await oneRun.release();
    }
  });
});
