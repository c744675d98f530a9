import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { importJudgeTypes } from '../../services/scorer/judge-modules.js';
import { ScorerCore, scorerService } from '../../services/scorer/service.js';
import { Runtime } from '../../src/engine/index.js';
import type { ModelRef } from '../../src/gen/duel/v1/common.js';
import {
  type CompareRequest,
  type CompareResponse,
  PreferenceScorerServiceClient,
  ProbMode,
  RankMethod,
  type RankRequest,
  type RankResponse,
} from '../../src/gen/duel/v1/scorer.js';
import { initJudgeWeights, judgeParams } from '../../src/models/judge/model.js';
import { saveJudgeDir } from '../../src/models/judge/runner.js';
import { parsePairRMConfig } from '../../src/models/pairrm/config.js';
import { initPairRMWeights } from '../../src/models/pairrm/model.js';
import { savePairRMDir } from '../../src/models/pairrm/runner.js';
import { parseRewardConfig } from '../../src/models/reward/config.js';
import { initRewardWeights } from '../../src/models/reward/model.js';
import { RewardRunner, saveRewardDir } from '../../src/models/reward/runner.js';
import { wordLevelTokenizer } from '../../src/models/tokenizer.js';
import { FileArtifactStore } from '../../src/platform/artifacts.js';
import type { GrpcServer } from '../../src/platform/grpc/server.js';
import { violationsOf } from '../../src/platform/grpc/status-details.js';
import { drawPrompts } from '../../src/testbed/corpus.js';
import { parseGame, promptIds, truePref } from '../../src/testbed/game.js';
import { oracleJudgeModule, saveOracleJudgeDir } from '../../src/testbed/oracle-judge.js';
import { startService, unary } from '../helpers/grpc.js';
import { tinyJudgeConfig } from '../helpers/model-fixtures.js';
import { fileTempDir } from '../helpers/tmp.js';

const root = fileTempDir('duel-scorer-');
const runtime = new Runtime({ workers: 1, intraOpThreads: 1 });
let server: GrpcServer;
let client: PreferenceScorerServiceClient;
let judge: ModelRef;

beforeAll(async () => {
  const cfg = tinyJudgeConfig();
  const w = initJudgeWeights(cfg, 3);
  // Sharpen the random judge so it has opinions worth ranking.
  for (const spec of judgeParams(cfg))
    if (spec.init === 'normal')
      for (const [i, x] of w[spec.name]!.data.entries()) w[spec.name]!.data[i] = x * 20;
  saveJudgeDir(join(root, 'src'), cfg, w);
  judge = {
    adapter: undefined,
    artifact: new FileArtifactStore(join(root, 'store')).put(join(root, 'src'), 'judge'),
    name: 'judge',
  };
  let address: string;
  ({ server, address } = await startService([scorerService(new ScorerCore(runtime))]));
  client = new PreferenceScorerServiceClient(address, grpc.credentials.createInsecure());
});

afterAll(async () => {
  client?.close();
  await server?.shutdown('test over');
  await runtime.close();
});

const cand = (...ids: number[]) => ({
  tokenIds: ids,
  text: '',
  tokenLogprobs: [],
  logprob: 0,
  source: 0,
  finished: true,
});
const ITEM = {
  prompt: { tokenIds: [1, 2], text: '', id: 'p' },
  candidates: [cand(3), cand(4, 5), cand(6, 7, 8), cand(9)],
};

describe('PreferenceScorerService', () => {
  it('compares K candidates: antisymmetric prefs, win rates and Bradley-Terry scores', async () => {
    for (const probMode of [ProbMode.PROB_MODE_PAIRWISE, ProbMode.PROB_MODE_BT]) {
      const res = await unary<CompareRequest, CompareResponse>(client.compare.bind(client), {
        judge,
        items: [ITEM],
        probMode,
        temperature: 1,
      });
      const c = res.comparisons[0]!;
      expect([c.prefs!.rows, c.prefs!.cols, c.logits!.rows]).toEqual([4, 4, 4]);
      const p = (i: number, j: number) => c.prefs!.values[i * 4 + j]!;
      for (let i = 0; i < 4; i++) for (let j = 0; j < 4; j++) expect(p(i, j) + p(j, i)).toBeCloseTo(1, 6);
      expect(c.winRates).toHaveLength(4);
      expect(c.btScores.reduce((a, b) => a + b, 0)).toBeCloseTo(0, 6);
      expect(Math.max(...c.prefs!.values) - Math.min(...c.prefs!.values)).toBeGreaterThan(0.05);
    }
  });

  it('ranks by the full matrix and by one bubble pass', async () => {
    const full = await unary<RankRequest, RankResponse>(client.rank.bind(client), {
      judge,
      items: [ITEM],
      method: RankMethod.RANK_METHOD_FULL,
    });
    const r = full.rankings[0]!;
    expect([...r.order].sort()).toEqual([0, 1, 2, 3]);
    expect(r.bestIndex).toBe(r.order[0]);
    expect(r.scores[r.order[0]!]).toBe(Math.max(...r.scores));
    expect(r.pairsJudged).toBe(12);
    const bubble = await unary<RankRequest, RankResponse>(client.rank.bind(client), {
      judge,
      items: [ITEM],
      method: RankMethod.RANK_METHOD_BUBBLE,
    });
    expect(bubble.rankings[0]!.pairsJudged).toBe(6);
    expect(bubble.rankings[0]!.order[0]).toBe(bubble.rankings[0]!.bestIndex);
  });

  it('answers bad requests with INVALID_ARGUMENT naming the fields', async () => {
    const err = await unary<CompareRequest, CompareResponse>(client.compare.bind(client), {
      judge,
      items: [{ prompt: { tokenIds: [], text: '', id: '' }, candidates: [cand(3)] }],
      probMode: ProbMode.PROB_MODE_PAIRWISE,
    }).catch((e: grpc.ServiceError) => e);
    expect((err as grpc.ServiceError).code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(violationsOf(err as grpc.ServiceError).map((v) => v.field)).toEqual([
      'items[0].prompt',
      'items[0].candidates',
    ]);
  });

  it('scores with a Bradley-Terry reward model: K passes, P(i ≻ j) = σ(r_i − r_j), an out-of-vocabulary id named', async () => {
    const cfg = parseRewardConfig({
      architectures: ['Qwen3ForSequenceClassification'],
      model_type: 'qwen3',
      vocab_size: 16,
      hidden_size: 16,
      intermediate_size: 32,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      head_dim: 8,
      pad_token_id: 0,
      id2label: { 0: 'LABEL_0' },
    });
    const w = initRewardWeights(cfg, 4);
    for (const [i, x] of w['score.weight']!.data.entries()) w['score.weight']!.data[i] = x * 200;
    saveRewardDir(join(root, 'rm'), cfg, w);
    const rm: ModelRef = {
      adapter: undefined,
      artifact: new FileArtifactStore(join(root, 'store')).put(join(root, 'rm'), 'rm'),
      name: 'rm',
    };
    const res = await unary<CompareRequest, CompareResponse>(client.compare.bind(client), {
      judge: rm,
      items: [ITEM],
      probMode: ProbMode.PROB_MODE_PAIRWISE,
    });
    const local = await RewardRunner.create(runtime, cfg, w);
    const r = await local.rewards(ITEM.candidates.map((c) => ({ prompt: [1, 2], completion: c.tokenIds })));
    await local.release();
    expect(Math.max(...r) - Math.min(...r)).toBeGreaterThan(0.1);
    const p = res.comparisons[0]!.prefs!.values;
    for (let i = 0; i < 4; i++)
      for (let j = 0; j < 4; j++)
        expect(p[i * 4 + j]!).toBeCloseTo(i === j ? 0.5 : 1 / (1 + Math.exp(r[j]! - r[i]!)), 5);
    const ranked = await unary<RankRequest, RankResponse>(client.rank.bind(client), {
      judge: rm,
      items: [ITEM],
      method: RankMethod.RANK_METHOD_BUBBLE,
    });
    expect(ranked.rankings[0]!.bestIndex).toBe(r.indexOf(Math.max(...r)));
    expect(ranked.rankings[0]!.pairsJudged).toBe(4);
    const err = await unary<CompareRequest, CompareResponse>(client.compare.bind(client), {
      judge: rm,
      items: [{ ...ITEM, candidates: [cand(3), cand(99)] }],
      probMode: ProbMode.PROB_MODE_PAIRWISE,
    }).catch((e: grpc.ServiceError) => e);
    expect((err as grpc.ServiceError).code).toBe(grpc.status.INVALID_ARGUMENT);
    expect((err as grpc.ServiceError).details).toMatch(
      /token id 99 is outside the reward model's vocabulary/,
    );
  });

  it('serves the published PairRM as published: text through its spm.model, the same scores as the ids', async () => {
    const spm = new URL('../fixtures/spm/', import.meta.url).pathname;
    const expected = JSON.parse(readFileSync(join(spm, 'expected.json'), 'utf8'));
    const cfg = parsePairRMConfig({
      architectures: ['DebertaV2PairRM'],
      model_type: 'deberta-v2',
      vocab_size: expected.vocab_size + 4,
      // Weights large enough that different token ids give different preferences.
      initializer_range: 1,
      hidden_size: 8,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      intermediate_size: 16,
      relative_attention: true,
      position_buckets: 4,
      max_relative_positions: 8,
      pos_att_type: 'p2c|c2p',
      share_att_key: true,
      norm_rel_ebd: 'layer_norm',
      position_biased_input: false,
      cls_token_id: 1,
      sep_token_id: 2,
      source_prefix_id: 13,
      cand1_prefix_id: 14,
      cand2_prefix_id: 15,
    });
    const dir = join(root, 'pairrm');
    savePairRMDir(dir, cfg, initPairRMWeights(cfg, 2), {
      extraFiles: {
        'spm.model': readFileSync(join(spm, 'spm.model')),
        'added_tokens.json': readFileSync(join(spm, 'added_tokens.json')),
      },
    });
    const pairrm: ModelRef = {
      adapter: undefined,
      artifact: new FileArtifactStore(join(root, 'store')).put(dir, 'pairrm'),
      name: 'pairrm',
    };
    const compare = (items: CompareRequest['items']) =>
      unary<CompareRequest, CompareResponse>(client.compare.bind(client), {
        judge: pairrm,
        items,
        probMode: ProbMode.PROB_MODE_PAIRWISE,
      });
    const res = await compare([ITEM]);
    const p = res.comparisons[0]!.prefs!.values;
    for (let i = 0; i < 4; i++)
      for (let j = 0; j < 4; j++) expect(p[i * 4 + j]! + p[j * 4 + i]!).toBeCloseTo(1, 6);
    // The reference SentencePiece's ids for these texts (test/fixtures/spm/make.py).
    const [a, b, c] = expected.encoded as { text: string; ids: number[] }[];
    const text = (s: string) => ({ ...cand(), text: s });
    const byText = await compare([
      { prompt: { tokenIds: [], text: a!.text, id: 'p' }, candidates: [text(b!.text), text(c!.text)] },
    ]);
    const byIds = await compare([
      { prompt: { tokenIds: a!.ids, text: '', id: 'p' }, candidates: [cand(...b!.ids), cand(...c!.ids)] },
    ]);
    expect(byText.comparisons[0]!.prefs!.values).toEqual(byIds.comparisons[0]!.prefs!.values);
    expect(byText.comparisons[0]!.prefs!.values[1]).not.toBeCloseTo(0.5, 3);
  });

  it("renders a reward model's text items as conversations through its chat template", async () => {
    const tok = wordLevelTokenizer(['<user>', '<assistant>', 'hello', 'hi', 'go', 'away', 'there']);
    const config = {
      ...tok.tokenizerConfig,
      chat_template: '{% for m in messages %}<{{ m.role }}> {{ m.content }} {% endfor %}',
    };
    const cfg = parseRewardConfig({
      architectures: ['LlamaForSequenceClassification'],
      model_type: 'llama',
      vocab_size: 11,
      hidden_size: 16,
      intermediate_size: 32,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      pad_token_id: tok.ids.pad,
      id2label: { 0: 'LABEL_0' },
    });
    const w = initRewardWeights(cfg, 6);
    for (const [i, x] of w['score.weight']!.data.entries()) w['score.weight']!.data[i] = x * 200;
    saveRewardDir(join(root, 'rm-chat'), cfg, w, {
      extraFiles: {
        'tokenizer.json': JSON.stringify(tok.tokenizerJson),
        'tokenizer_config.json': JSON.stringify(config),
      },
    });
    const rm: ModelRef = {
      adapter: undefined,
      artifact: new FileArtifactStore(join(root, 'store')).put(join(root, 'rm-chat'), 'rm-chat'),
      name: 'rm-chat',
    };
    const text = (t: string) => ({ ...cand(), tokenIds: [], text: t });
    const res = await unary<CompareRequest, CompareResponse>(client.compare.bind(client), {
      judge: rm,
      items: [
        { prompt: { tokenIds: [], text: 'hello', id: 'p' }, candidates: [text('hi there'), text('go away')] },
      ],
      probMode: ProbMode.PROB_MODE_PAIRWISE,
    });
    // The same conversations by hand: "<user> hello <assistant> hi there " and "… go away ".
    const id = (word: string) => tok.tokenizerJson.model.vocab[word]!;
    const conv = (a: string[]) => [id('<user>'), id('hello'), id('<assistant>'), ...a.map(id)];
    const local = await RewardRunner.create(runtime, cfg, w);
    const [r0, r1] = await local.rewards([
      { prompt: [], completion: conv(['hi', 'there']) },
      { prompt: [], completion: conv(['go', 'away']) },
    ]);
    await local.release();
    expect(Math.abs(r0! - r1!)).toBeGreaterThan(0.05);
    expect(res.comparisons[0]!.prefs!.values[1]!).toBeCloseTo(1 / (1 + Math.exp(r1! - r0!)), 5);
  });

  it('serves a judge type from a module (judges.modules): the testbed’s oracle, exactly P*', async () => {
    const game = parseGame({});
    saveOracleJudgeDir(join(root, 'oracle'), game);
    const oracle: ModelRef = {
      adapter: undefined,
      artifact: new FileArtifactStore(join(root, 'store')).put(join(root, 'oracle'), 'oracle'),
      name: 'oracle',
    };
    const targets = drawPrompts(game, 1, 5)[0]!;
    const ys = [targets, [...targets].reverse(), targets.slice(1)];
    const item = {
      prompt: { tokenIds: promptIds(targets), text: '', id: 'p' },
      candidates: ys.map((y) => ({ ...cand(), tokenIds: y })),
    };
    const compare = (c: PreferenceScorerServiceClient) =>
      unary<CompareRequest, CompareResponse>(c.compare.bind(c), {
        judge: oracle,
        items: [item],
        probMode: ProbMode.PROB_MODE_PAIRWISE,
      });
    // Without the module the scorer does not know the type: it reads the directory as its own judge's.
    await expect(compare(client)).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    const types = await importJudgeTypes([oracleJudgeModule()]);
    const { server: s2, address } = await startService([
      scorerService(new ScorerCore(runtime, undefined, undefined, undefined, undefined, types)),
    ]);
    const c2 = new PreferenceScorerServiceClient(address, grpc.credentials.createInsecure());
    try {
      const prefs = (await compare(c2)).comparisons[0]!.prefs!;
      for (let i = 0; i < 3; i++)
        for (let j = 0; j < 3; j++)
          if (i !== j)
            expect(prefs.values[i * 3 + j]!).toBeCloseTo(truePref(game, targets, ys[i]!, ys[j]!), 5);
    } finally {
      c2.close();
      await s2.shutdown('test over');
    }
    await expect(importJudgeTypes([join(root, 'nothing.js')])).rejects.toThrow(
      /judges\.modules\[0\]: cannot import/,
    );
  });
});
