/**
 * PreferenceScorerService: a thin adapter from the gRPC contract to the judge (src/models/judge)
 * and the estimators (src/algorithms). Judges load by reference and verified digest; Compare
 * returns, per prompt, the ordered-pair logits C, the preference matrix (pairwise σ((C_ij−C_ji)/T)
 * or Bradley-Terry), win rates and BT scores; Rank returns best-of-n by the full matrix or by
 * one bubble pass.
 */
import { btScores, prefsFromLogits, winRates } from '../../src/algorithms/estimators.js';
import type { Runtime } from '../../src/engine/index.js';
import { DuelError } from '../../src/errors.js';
import type { Matrix, ModelRef } from '../../src/gen/duel/v1/common.js';
import {
  type CompareItem,
  PreferenceScorerServiceService,
  ProbMode,
  RankMethod,
} from '../../src/gen/duel/v1/scorer.js';
import type { ComparingJudge, JudgeType } from '../../src/models/judge/judge-type.js';
import { loadJudgeDir } from '../../src/models/judge/load.js';
import { readConfigJson } from '../../src/models/model-dir.js';
import { type AnyTokenizer, TextTokenizer, tokenizerOfDir } from '../../src/models/tokenizer.js';
import { Admission } from '../../src/platform/admission.js';
import { artifactKey, type ResolveArtifact, resolveFileArtifact } from '../../src/platform/artifacts.js';
import { checkModelRef } from '../../src/platform/contract-checks.js';
import { service } from '../../src/platform/grpc/server.js';
import { LoadOnce } from '../../src/platform/load-once.js';
import type { ServiceMetrics } from '../../src/platform/metrics.js';
import { Violations } from '../../src/platform/violations.js';

export interface ScorerLimits {
  /** Prompts per call. */
  maxItems: number;
  /** Candidates per prompt (K). */
  maxCandidates: number;
}

const DEFAULT_SCORER_LIMITS: ScorerLimits = { maxItems: 256, maxCandidates: 64 };

interface LoadedJudge {
  /** A pairwise judge, a reward model, or a judge type from a module (the testbed's oracle). */
  runner: ComparingJudge;
  /** `pairwise`, `reward`, or the module judge's model_type. */
  kind: string;
  tokenizer: AnyTokenizer | undefined;
  /** Why text cannot be encoded, when there is no tokenizer. */
  noTokenizer: string;
  parameters: number;
}

function checkItems(v: Violations, items: CompareItem[], limits: ScorerLimits): void {
  if (v.check(items.length > 0, 'items', 'must hold at least one item'))
    v.check(
      items.length <= limits.maxItems,
      'items',
      `must hold at most ${limits.maxItems} items, got ${items.length}`,
    );
  items.forEach((item, i) => {
    v.check(
      item.prompt !== undefined && (item.prompt.tokenIds.length > 0 || item.prompt.text.length > 0),
      `items[${i}].prompt`,
      'needs token_ids or text',
    );
    const k = item.candidates.length;
    v.check(
      k >= 2 && k <= limits.maxCandidates,
      `items[${i}].candidates`,
      `must hold 2 to ${limits.maxCandidates} candidates, got ${k}`,
    );
    for (const [j, c] of item.candidates.entries())
      v.check(
        c.tokenIds.length > 0 || c.text.length > 0,
        `items[${i}].candidates[${j}]`,
        'needs token_ids or text',
      );
  });
}

const matrix = (m: number[][]): Matrix => ({ rows: m.length, cols: m[0]?.length ?? 0, values: m.flat() });

export class ScorerCore {
  private readonly judges = new LoadOnce<LoadedJudge>();

  constructor(
    private readonly runtime: Runtime,
    readonly limits: ScorerLimits = DEFAULT_SCORER_LIMITS,
    readonly metrics?: ServiceMetrics,
    readonly admission = new Admission(4, 64),
    private readonly resolve: ResolveArtifact = resolveFileArtifact,
    /** Judge types from modules (`judges.modules`), by model_type. */
    private readonly judgeTypes: ReadonlyMap<string, JudgeType> = new Map(),
  ) {}

  /** Loads once per (URI, digest); concurrent loads of one judge share the work. */
  load(ref: ModelRef): Promise<LoadedJudge> {
    return this.judges.get(artifactKey(ref.artifact!), async () => {
      const dir = await this.resolve(ref.artifact!);
      // PairRM is published with SentencePiece's spm.model and no tokenizer.json.
      const tokenizer = await tokenizerOfDir(dir);
      const noTokenizer = 'the judge has no tokenizer.json or spm.model: send token_ids';
      const modelType = (readConfigJson(dir) as { model_type?: string }).model_type ?? '';
      const type = this.judgeTypes.get(modelType);
      if (type)
        return { runner: await type.load(dir), kind: modelType, tokenizer, noTokenizer, parameters: 0 };
      const { judge, kind, parameters } = await loadJudgeDir(this.runtime, dir);
      return { runner: judge, kind, tokenizer, noTokenizer, parameters };
    });
  }

  /**
   * Token ids of an item's prompt and candidates (text through the judge's tokenizer). A reward
   * model scores conversations: given text and a chat template, each candidate becomes the
   * rendered [user: prompt, assistant: candidate], as transformers' reward-model recipes feed it.
   */
  idsOf(judge: LoadedJudge, item: CompareItem, i: number): { prompt: number[]; candidates: number[][] } {
    const tok = judge.tokenizer;
    const allText =
      item.prompt!.tokenIds.length === 0 && item.candidates.every((c) => c.tokenIds.length === 0);
    if (judge.kind === 'reward' && allText && tok instanceof TextTokenizer && tok.hasChatTemplate)
      return {
        prompt: [],
        candidates: item.candidates.map((c) =>
          tok.encode(
            tok.applyChatTemplate(
              [
                { role: 'user', content: item.prompt!.text },
                { role: 'assistant', content: c.text },
              ],
              false,
            ),
          ),
        ),
      };
    const encode = (ids: number[], text: string, field: string) => {
      if (ids.length > 0) return [...ids];
      if (!judge.tokenizer) throw DuelError.invalidArgument([{ field, description: judge.noTokenizer }]);
      return judge.tokenizer.encode(text);
    };
    return {
      prompt: encode(item.prompt!.tokenIds, item.prompt!.text, `items[${i}].prompt.text`),
      candidates: item.candidates.map((c, j) =>
        encode(c.tokenIds, c.text, `items[${i}].candidates[${j}].text`),
      ),
    };
  }
}

/** A judge by reference; adapters are for decoders (a judge with one would be scored without it). */
function checkJudgeRef(v: Violations, judge: ModelRef | undefined): void {
  checkModelRef(v, judge, 'judge');
  v.check(!judge?.adapter, 'judge.adapter', 'is not supported: judges take no LoRA adapter');
}

export function scorerService(core: ScorerCore) {
  const validated = (judge: ModelRef | undefined, items: CompareItem[]) => {
    const v = new Violations();
    checkJudgeRef(v, judge);
    checkItems(v, items, core.limits);
    v.throwIfAny();
  };
  return service(PreferenceScorerServiceService, {
    async loadJudge(req) {
      const v = new Violations();
      checkJudgeRef(v, req.judge);
      v.throwIfAny();
      const t0 = performance.now();
      const j = await core.load(req.judge!);
      return { judge: req.judge, parameterCount: j.parameters, loadSeconds: (performance.now() - t0) / 1000 };
    },

    async compare(req, ctx) {
      validated(req.judge, req.items);
      const temperature = req.temperature ?? 1;
      if (!(temperature > 0))
        throw DuelError.invalidArgument([
          { field: 'temperature', description: `must be > 0, got ${temperature}` },
        ]);
      const judge = await core.load(req.judge!);
      const comparisons = [];
      for (const [i, item] of req.items.entries()) {
        if (ctx.signal.aborted) throw DuelError.from(ctx.signal.reason ?? new Error('cancelled'));
        const { prompt, candidates } = core.idsOf(judge, item, i);
        const { logits } = await core.admission.run(
          () => judge.runner.compare(prompt, candidates),
          ctx.signal,
        );
        core.metrics?.count(
          'duel_scorer_pairs_judged_total',
          'ordered pairs judged',
          candidates.length * (candidates.length - 1),
        );
        const prefs = prefsFromLogits(
          logits,
          req.probMode === ProbMode.PROB_MODE_BT ? 'bt' : 'pairwise',
          temperature,
        );
        comparisons.push({
          prefs: matrix(prefs),
          logits: matrix(logits),
          winRates: winRates(prefs),
          btScores: btScores(logits),
        });
      }
      return { comparisons };
    },

    async rank(req, ctx) {
      validated(req.judge, req.items);
      const judge = await core.load(req.judge!);
      const rankings = [];
      for (const [i, item] of req.items.entries()) {
        if (ctx.signal.aborted) throw DuelError.from(ctx.signal.reason ?? new Error('cancelled'));
        const { prompt, candidates } = core.idsOf(judge, item, i);
        const method = req.method === RankMethod.RANK_METHOD_BUBBLE ? 'bubble' : 'matrix';
        const r = await core.admission.run(() => judge.runner.rank(prompt, candidates, method), ctx.signal);
        rankings.push({ order: r.order, bestIndex: r.best, scores: r.scores, pairsJudged: r.judged });
      }
      return { rankings };
    },
  });
}
