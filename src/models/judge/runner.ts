/**
 * The judge in a Runtime worker: ordered-pair logits in batches, the K×K preference matrix with
 * Bradley-Terry scores, and best-of-n. The session's contract is input_ids [B, T], attention_mask
 * [B, T], markers [B, 3] → logits [B]; duel's own judge (weights in the worker's state) and an
 * external ONNX judge with the same contract run the same way.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  type ComputeDtype,
  compile,
  Graph,
  type Runtime,
  T,
  type Tensor,
  WeightsSession,
} from '../../engine/index.js';
import { DuelError } from '../../errors.js';
import { weightDtype, weightsFor } from '../common/precision.js';
import { fusedKernelsFor } from '../llama/decoder.js';
import type { HostTensor } from '../llama/weights.js';
import { readConfigJson, readWeights, type SaveOptions, writeWeightsDir } from '../model-dir.js';
import { type JudgeConfig, parseJudgeConfig, toHfJudgeConfig } from './config.js';
import { judgeLogits, judgeParams, type PairInput, pairBatch } from './model.js';
import { btScores, prefsFromLogits, winRates } from './preferences.js';

export type { PairInput } from './model.js';

export const JUDGE_ONNX = join('onnx', 'model.onnx');

export interface Preferences {
  /** C[i][j]: the ordered-pair logit of y_i as candidate 1 against y_j (0 on the diagonal). */
  logits: number[][];
  /** P[i][j] = σ(C[i][j] − C[j][i]): diagonal 0.5, P[i][j] + P[j][i] = 1. */
  prefs: number[][];
  /** Bradley-Terry scores s_i = mean over j ≠ i of (C[i][j] − C[j][i]). */
  scores: number[];
  /** Mean over j ≠ i of P[i][j]: how often y_i beats another completion of the same prompt. */
  winrates: number[];
}

/**
 * The judge's graph: weights compiled in (`weights`) or inputs held as `dtype` says
 * (common/precision.ts: float16 but the norms'); the logits float32 either way.
 */
function judgeGraph(
  cfg: JudgeConfig,
  weights: Record<string, HostTensor> | undefined,
  fusedKernels = false,
  dtype: ComputeDtype = 'float32',
) {
  const g = new Graph();
  const given = weights ? weightsFor(weights, dtype) : {};
  const params = new Map<string, Tensor>();
  for (const spec of judgeParams(cfg)) {
    const w = given[spec.name];
    params.set(
      spec.name,
      w
        ? g.constant(w.data, w.dtype, spec.shape)
        : g.input(spec.name, weightDtype(spec.name, dtype), spec.shape),
    );
  }
  const logits = judgeLogits(cfg, (n) => params.get(n)!, {
    inputIds: g.input('input_ids', 'int64', ['B', 'T']),
    attentionMask: g.input('attention_mask', 'int64', ['B', 'T']),
    markers: g.input('markers', 'int64', ['B', 3]),
    fusedKernels,
  });
  return { graph: g, logits: T.cast(logits, 'float32') };
}

/** The judge with its weights inside, for runtimes other than duel's (and the external path). */
export function exportJudgeOnnx(cfg: JudgeConfig, weights: Record<string, HostTensor>) {
  const { graph, logits } = judgeGraph(cfg, weights);
  return compile(graph, { logits }, 'duel_pairrm');
}

export function saveJudgeDir(
  dir: string,
  cfg: JudgeConfig,
  weights: Record<string, HostTensor>,
  options: SaveOptions = {},
) {
  writeWeightsDir(dir, toHfJudgeConfig(cfg), judgeParams(cfg), weights, options);
}

export class JudgeRunner {
  private constructor(
    readonly config: JudgeConfig,
    private readonly model: WeightsSession,
  ) {}

  static async create(
    runtime: Runtime,
    cfg: JudgeConfig,
    weights: Record<string, HostTensor>,
  ): Promise<JudgeRunner> {
    // ONNX Runtime's fused kernels where every node costs a dispatch (the cpu provider keeps the
    // unfused ops, and the figures measured with them).
    // In the runtime's dtype: float16 holds the weights (but the norms') in half the memory.
    const { graph, logits } = judgeGraph(cfg, undefined, fusedKernelsFor(runtime.provider), runtime.dtype);
    const model = compile(graph, { logits }, 'judge', { provider: runtime.provider });
    return new JudgeRunner(
      cfg,
      await WeightsSession.load(
        runtime,
        model,
        weightsFor(weights, runtime.dtype),
        Object.keys(weights),
        'judge',
      ),
    );
  }

  /** An external ONNX judge with the same inputs and outputs (config.json gives markers and limits). */
  static async fromOnnx(runtime: Runtime, cfg: JudgeConfig, bytes: Uint8Array): Promise<JudgeRunner> {
    // Its weights are inside the file: the state holds none.
    const model = await WeightsSession.load(runtime, bytes, {}, [], 'judge-onnx');
    const session = model.session;
    for (const name of ['input_ids', 'attention_mask', 'markers'])
      if (!session.inputNames.includes(name))
        throw DuelError.invalidArgument([
          {
            field: 'judge',
            description: `the ONNX judge has no input '${name}' (it has ${session.inputNames.join(', ')})`,
          },
        ]);
    if (!session.outputNames.includes('logits'))
      throw DuelError.invalidArgument([
        { field: 'judge', description: "the ONNX judge has no output 'logits'" },
      ]);
    return new JudgeRunner(cfg, model);
  }

  /** A judge directory: config.json plus model.safetensors (duel's) or onnx/model.onnx (external). */
  static async fromDir(runtime: Runtime, dirPath: string): Promise<JudgeRunner> {
    const dir = resolve(dirPath);
    const cfg = parseJudgeConfig(readConfigJson(dir), join(dir, 'config.json'));
    if (existsSync(join(dir, 'model.safetensors')) || existsSync(join(dir, 'model.safetensors.index.json')))
      return JudgeRunner.create(
        runtime,
        cfg,
        readWeights(dir, judgeParams(cfg), () => false, 'a duel_pairrm judge'),
      );
    if (existsSync(join(dir, JUDGE_ONNX)))
      return JudgeRunner.fromOnnx(runtime, cfg, readFileSync(join(dir, JUDGE_ONNX)));
    throw DuelError.invalidArgument([
      { field: dir, description: `holds neither model.safetensors nor ${JUDGE_ONNX}` },
    ]);
  }

  /** C for each ordered pair, in batches of at most `maxBatch` sequences. */
  async pairLogits(pairs: PairInput[], maxBatch = 64): Promise<number[]> {
    const out: number[] = [];
    for (let start = 0; start < pairs.length; start += maxBatch) {
      const b = pairBatch(this.config, pairs.slice(start, start + maxBatch), start);
      const res = await this.model.run(
        {
          input_ids: { dtype: 'int64', dims: [b.n, b.length], data: b.inputIds },
          attention_mask: { dtype: 'int64', dims: [b.n, b.length], data: b.attentionMask },
          markers: { dtype: 'int64', dims: [b.n, 3], data: b.markers },
        },
        ['logits'],
      );
      out.push(...Array.from(res.logits!.data as Float32Array));
    }
    return out;
  }

  /** The K×K matrices of one prompt's candidates (all K·(K−1) ordered pairs evaluated). */
  compare(prompt: number[], candidates: number[][], maxBatch = 64): Promise<Preferences> {
    return compareByPairs((pairs) => this.pairLogits(pairs, maxBatch), prompt, candidates);
  }

  /** P(first ≻ second | prompt) of each pair. */
  pairProbs(pairs: PairInput[]): Promise<number[]> {
    return probsByPairs((p) => this.pairLogits(p), pairs);
  }

  /** Candidates ranked by rankByPairs. */
  rank(prompt: number[], candidates: number[][], method: 'matrix' | 'bubble') {
    return rankByPairs((pairs) => this.pairLogits(pairs), prompt, candidates, method);
  }

  release(): Promise<void> {
    return this.model.release();
  }
}

/** What a pairwise judge computes: C for each ordered pair. */
export type PairLogits = (pairs: PairInput[]) => Promise<number[]>;

/** P(first ≻ second | prompt) of each pair: σ(C(x, a, b) − C(x, b, a)), both orders batched. */
export async function probsByPairs(pairLogits: PairLogits, pairs: PairInput[]): Promise<number[]> {
  const both = await pairLogits([
    ...pairs,
    ...pairs.map((p) => ({ prompt: p.prompt, first: p.second, second: p.first })),
  ]);
  return pairs.map((_, i) => 1 / (1 + Math.exp(-(both[i]! - both[pairs.length + i]!))));
}

/** The K×K matrices of one prompt's candidates from all K·(K−1) ordered pairs. */
export async function compareByPairs(
  pairLogits: PairLogits,
  prompt: number[],
  candidates: number[][],
): Promise<Preferences> {
  const k = candidates.length;
  const pairs: [number, number][] = [];
  for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) if (i !== j) pairs.push([i, j]);
  const c = await pairLogits(
    pairs.map(([i, j]) => ({ prompt, first: candidates[i]!, second: candidates[j]! })),
  );
  const logits = Array.from({ length: k }, () => new Array<number>(k).fill(0));
  pairs.forEach(([i, j], n) => {
    logits[i]![j] = c[n]!;
  });
  return fromLogits(logits);
}

/**
 * Candidates ranked. 'matrix' orders all by Bradley-Terry score over every pair (K·(K−1) judge
 * calls); 'bubble' keeps a champion and challenges it once per candidate (2·(K−1) calls), so
 * only the champion is placed: it leads, the rest keep their input order and get no scores.
 */
export async function rankByPairs(
  pairLogits: PairLogits,
  prompt: number[],
  candidates: number[][],
  method: 'matrix' | 'bubble',
): Promise<{ order: number[]; best: number; scores: number[]; judged: number }> {
  if (candidates.length === 0)
    throw DuelError.invalidArgument([{ field: 'candidates', description: 'is empty' }]);
  const k = candidates.length;
  if (method === 'matrix') {
    const { scores } = await compareByPairs(pairLogits, prompt, candidates);
    const order = orderByScores(scores);
    return { order, best: order[0]!, scores, judged: k * (k - 1) };
  }
  let best = 0;
  for (let c = 1; c < k; c++) {
    const [ab, ba] = await pairLogits([
      { prompt, first: candidates[c]!, second: candidates[best]! },
      { prompt, first: candidates[best]!, second: candidates[c]! },
    ]);
    // σ(C_cb − C_bc) > ½ exactly when the challenger's logit beats the champion's.
    if (ab! > ba!) best = c;
  }
  const order = [best, ...[...candidates.keys()].filter((x) => x !== best)];
  return { order, best, scores: [], judged: 2 * (k - 1) };
}

/** Candidate indices by descending score, ties in input order. */
export function orderByScores(scores: number[]): number[] {
  return [...scores.keys()].sort((a, b) => scores[b]! - scores[a]! || a - b);
}

/** Probabilities and scores from the ordered-pair logits. */
export function fromLogits(logits: number[][]): Preferences {
  const prefs = prefsFromLogits(logits, 'pairwise');
  const winrates = logits.length < 2 ? logits.map(() => 0.5) : winRates(prefs, false);
  return { logits, prefs, scores: btScores(logits), winrates };
}
