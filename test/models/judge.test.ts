/** The PairRM-style judge: its logit against a reference, the matrices' invariants, ONNX interop, best-of-n. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Runtime } from '../../src/engine/index.js';
import { rng } from '../../src/models/common/rng.js';
import { type JudgeConfig, parseJudgeConfig, toHfJudgeConfig } from '../../src/models/judge/config.js';
import { initJudgeWeights, judgeLogits, judgeParams } from '../../src/models/judge/model.js';
import { exportJudgeOnnx, JUDGE_ONNX, JudgeRunner, saveJudgeDir } from '../../src/models/judge/runner.js';
import type { HostTensor } from '../../src/models/llama/weights.js';
import { gradcheck } from '../helpers/gradcheck.js';
import { fileTempDir } from '../helpers/tmp.js';
import { linear, referenceHidden } from './llama-reference.js';

const cfg: JudgeConfig = parseJudgeConfig({
  model_type: 'duel_pairrm',
  encoder: {
    model_type: 'llama',
    vocab_size: 16,
    hidden_size: 16,
    intermediate_size: 24,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    max_position_embeddings: 32,
  },
  source_token_id: 13,
  candidate1_token_id: 14,
  candidate2_token_id: 15,
});

/** Weights scaled up from init so the judge has opinions. */
function sharp(seed: number): Record<string, HostTensor> {
  const w = initJudgeWeights(cfg, seed);
  const next = rng(seed + 1);
  for (const spec of judgeParams(cfg)) {
    const d = w[spec.name]!.data;
    for (let i = 0; i < d.length; i++)
      d[i] =
        spec.init === 'normal'
          ? d[i]! * 20
          : spec.init === 'ones'
            ? 1 + 0.2 * (next() - 0.5)
            : 0.1 * (next() - 0.5);
  }
  return w;
}

/** A segment table [3, H] large enough to move the judge's logits. */
function sharpSegments(c: JudgeConfig): HostTensor {
  const next = rng(11);
  const h = c.encoder.hiddenSize;
  return {
    dtype: 'float32',
    dims: [3, h],
    data: Float32Array.from({ length: 3 * h }, () => 2 * (next() - 0.5)),
  };
}

const runtime = new Runtime({ workers: 1, intraOpThreads: 1 });
const root = fileTempDir('duel-judge-');
let w: Record<string, HostTensor>;
let judge: JudgeRunner;
beforeAll(async () => {
  w = sharp(4);
  judge = await JudgeRunner.create(runtime, cfg, w);
});
afterAll(async () => {
  await runtime.close();
});

/**
 * C by hand: reference encoder (bidirectional), then the head in plain arithmetic. With segment
 * embeddings each token adds the row of its segment: 0 up to the first candidate's marker, 1 up to
 * the second's, 2 after.
 */
function referenceC(
  prompt: number[],
  a: number[],
  b: number[],
  model?: { c: JudgeConfig; w: Record<string, HostTensor> },
): number {
  const { c, w: weights } = model ?? { c: cfg, w };
  const ids = [13, ...prompt, 14, ...a, 15, ...b];
  const markers = [0, 1 + prompt.length, 2 + prompt.length + a.length];
  const h = c.encoder.hiddenSize;
  const seg = weights['segment_embeddings.weight'];
  const offset = seg
    ? ids.map((_, t): number[] => {
        const s = (t >= markers[1]! ? 1 : 0) + (t >= markers[2]! ? 1 : 0);
        return Array.from(seg.data.subarray(s * h, (s + 1) * h));
      })
    : undefined;
  const hidden = referenceHidden(c.encoder, weights, ids, undefined, true, offset);
  const f = (k: number) => {
    const z = linear(
      [[...hidden[markers[0]!]!, ...hidden[markers[k]!]!]],
      weights['head.0.weight']!,
      weights['head.0.bias']!,
    )[0]!;
    return linear([z.map(Math.tanh)], weights['head.2.weight']!, weights['head.2.bias']!)[0]![0]!;
  };
  return f(1) - f(2);
}

const CANDS = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [2, 2], [10]];
const PROMPT = [11, 12, 3];

describe('judge', () => {
  it('computes C = f(source, cand1) − f(source, cand2) as the reference does, in any batch', async () => {
    const pairs = [
      { prompt: PROMPT, first: CANDS[0]!, second: CANDS[2]! },
      { prompt: [5], first: CANDS[3]!, second: CANDS[4]! },
    ];
    const got = await judge.pairLogits(pairs);
    const alone = await judge.pairLogits(pairs.slice(1));
    const want = pairs.map((p) => referenceC(p.prompt, p.first, p.second));
    expect(Math.max(...want.map(Math.abs))).toBeGreaterThan(0.1);
    for (const [i, c] of got.entries()) expect(c).toBeCloseTo(want[i]!, 4);
    expect(alone[0]).toBeCloseTo(got[1]!, 5);
  });

  it('adds each token its segment embedding when the config asks for it, and keeps it in its directory', async () => {
    const segCfg = parseJudgeConfig({ ...toHfJudgeConfig(cfg), segment_embeddings: true });
    expect(segCfg.segmentEmbeddings).toBe(true);
    expect(cfg.segmentEmbeddings).toBe(false);
    const segW = { ...w, 'segment_embeddings.weight': sharpSegments(segCfg) };
    const segJudge = await JudgeRunner.create(runtime, segCfg, segW);
    const pairs = [
      { prompt: PROMPT, first: CANDS[0]!, second: CANDS[2]! },
      { prompt: [5], first: CANDS[3]!, second: CANDS[4]! },
    ];
    const got = await segJudge.pairLogits(pairs);
    const want = pairs.map((p) => referenceC(p.prompt, p.first, p.second, { c: segCfg, w: segW }));
    const without = pairs.map((p) => referenceC(p.prompt, p.first, p.second));
    for (const [i, x] of got.entries()) {
      expect(x).toBeCloseTo(want[i]!, 4);
      expect(Math.abs(x - without[i]!)).toBeGreaterThan(0.01);
    }
    await segJudge.release();
    const dir = join(root, 'segments');
    saveJudgeDir(dir, segCfg, segW);
    const loaded = await JudgeRunner.fromDir(runtime, dir);
    const again = await loaded.pairLogits(pairs);
    for (const [i, x] of again.entries()) expect(x).toBeCloseTo(got[i]!, 6);
    await loaded.release();
  });

  it('gives an antisymmetric preference matrix and scores that sum to zero', async () => {
    const { prefs, scores, logits } = await judge.compare(PROMPT, CANDS);
    for (let i = 0; i < CANDS.length; i++) {
      expect(prefs[i]![i]).toBe(0.5);
      for (let j = 0; j < CANDS.length; j++) expect(prefs[i]![j]! + prefs[j]![i]!).toBeCloseTo(1, 12);
    }
    expect(scores.reduce((a, b) => a + b, 0)).toBeCloseTo(0, 9);
    expect(logits[1]![3]).toBeCloseTo(referenceC(PROMPT, CANDS[1]!, CANDS[3]!), 4);
    // the candidates are told apart
    expect(Math.max(...prefs.flat()) - Math.min(...prefs.flat())).toBeGreaterThan(0.2);
  });

  it('picks best-of-n by the full matrix and by one bubble pass', async () => {
    const { scores, prefs } = await judge.compare(PROMPT, CANDS);
    const matrix = await judge.rank(PROMPT, CANDS, 'matrix');
    expect(matrix).toMatchObject({ best: scores.indexOf(Math.max(...scores)), judged: 20 });
    let champion = 0;
    for (let k = 1; k < CANDS.length; k++) if (prefs[k]![champion]! > 0.5) champion = k;
    expect(await judge.rank(PROMPT, CANDS, 'bubble')).toMatchObject({ best: champion, judged: 8 });
  });

  it('runs the same as an external ONNX judge, and loads both kinds of directory', async () => {
    const native = join(root, 'native');
    saveJudgeDir(native, cfg, w);
    const external = join(root, 'external');
    mkdirSync(join(external, 'onnx'), { recursive: true });
    writeFileSync(join(external, 'config.json'), JSON.stringify(toHfJudgeConfig(cfg)));
    writeFileSync(join(external, JUDGE_ONNX), exportJudgeOnnx(cfg, w).bytes);
    const a = await JudgeRunner.fromDir(runtime, native);
    const b = await JudgeRunner.fromDir(runtime, external);
    const want = (await judge.compare(PROMPT, CANDS)).logits.flat();
    for (const j of [a, b]) {
      const got = (await j.compare(PROMPT, CANDS)).logits.flat();
      for (const [i, x] of got.entries()) expect(x).toBeCloseTo(want[i]!, 5);
      await j.release();
    }
  });

  it('refuses token ids outside its vocabulary, naming the pair', async () => {
    await expect(judge.pairLogits([{ prompt: [1], first: [99], second: [2] }])).rejects.toThrow(
      /pairs\[0\]: token id 99 is outside the judge's vocabulary \[0, 16\)/,
    );
  });

  it('has gradients that agree with finite differences (float64), for judge training', async () => {
    const small = initJudgeWeights(cfg, 9);
    const checked = ['head.0.weight', 'head.2.weight', 'model.layers.1.mlp.up_proj.weight'];
    const { maxRelError } = await gradcheck(
      (g, xs) => {
        const lookup = (name: string) => {
          const i = checked.indexOf(name);
          return i >= 0
            ? xs[i]!
            : g.constant(Float64Array.from(small[name]!.data), 'float64', small[name]!.dims);
        };
        const ids = [13, 1, 2, 14, 3, 4, 15, 5, 0];
        return judgeLogits(cfg, lookup, {
          inputIds: g.constant(BigInt64Array.from(ids, BigInt), 'int64', [1, 9]),
          attentionMask: g.constant(BigInt64Array.from([1, 1, 1, 1, 1, 1, 1, 1, 0], BigInt), 'int64', [1, 9]),
          markers: g.constant(BigInt64Array.from([0n, 3n, 6n]), 'int64', [1, 3]),
        });
      },
      checked.map((n) => ({ shape: small[n]!.dims })),
      7,
      1e-5,
    );
    expect(maxRelError).toBeLessThan(1e-6);
  });
});
