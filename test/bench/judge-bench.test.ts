/** `duel bench judge` on small shapes: its figures are consistent with one another. */
import { describe, expect, it } from 'vitest';
import { runJudgeBench } from '../../bench/judge.js';
import { parsePairRMConfig } from '../../src/models/pairrm/config.js';
import { parseRewardConfig } from '../../src/models/reward/config.js';

describe('duel bench judge', () => {
  it('times a K×K comparison of each judge and relates it to the FLOPs a pass needs and the ceiling', async () => {
    const reward = parseRewardConfig({
      architectures: ['Qwen3ForSequenceClassification'],
      model_type: 'qwen3',
      vocab_size: 64,
      hidden_size: 32,
      intermediate_size: 64,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      head_dim: 8,
      pad_token_id: 0,
      id2label: { 0: 'LABEL_0' },
    });
    const pairrm = parsePairRMConfig({
      architectures: ['DebertaV2PairRM'],
      model_type: 'deberta-v2',
      vocab_size: 64,
      hidden_size: 16,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      intermediate_size: 32,
      relative_attention: true,
      position_buckets: 8,
      max_relative_positions: 32,
      pos_att_type: 'p2c|c2p',
      share_att_key: true,
      norm_rel_ebd: 'layer_norm',
      position_biased_input: false,
      cls_token_id: 1,
      sep_token_id: 2,
      source_prefix_id: 61,
      cand1_prefix_id: 62,
      cand2_prefix_id: 63,
    });
    const lines: string[] = [];
    const r = await runJudgeBench({
      provider: 'cpu',
      dtype: 'float16',
      shapes: { pairrm, reward },
      k: 3,
      source: 12,
      candidate: 6,
      reps: 2,
      log: (l) => lines.push(l),
    });
    const [p, rm] = r.rows;
    // float16 asked: the reward model computes in it, PairRM (DeBERTa) stays float32.
    expect(p).toMatchObject({
      judge: 'pairrm',
      dtype: 'float32',
      k: 3,
      passes: 6,
      tokens_per_pass: 12 + 3 + 2 * (6 + 3),
    });
    expect(rm).toMatchObject({ judge: 'reward', dtype: 'float16', k: 3, passes: 3, tokens_per_pass: 18 });
    for (const row of r.rows) {
      expect(row.passes_per_s).toBeCloseTo((row.passes * 1000) / row.compare_ms, 6);
      expect(row.fraction_of_ceiling).toBeCloseTo(row.achieved_gflops / r.ceiling_gflops, 9);
    }
    // 2 FLOPs per non-embedding weight per token at least.
    expect(rm!.gflop_per_pass * 1e9).toBeGreaterThan(2 * (rm!.parameters - 64 * 32) * 18);
    expect(lines.some((l) => l.includes('PairRM compare K=3 2/2'))).toBe(true);
  });
});
