/** `duel bench judge` on a small reward model: its figures are consistent with one another. */
import { describe, expect, it } from 'vitest';
import { runJudgeBench } from '../../bench/judge.js';
import { parseRewardConfig } from '../../src/models/reward/config.js';

describe('duel bench judge', () => {
  it('times K reward passes and relates them to the FLOPs a pass needs and the measured ceiling', async () => {
    const config = parseRewardConfig({
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
    const lines: string[] = [];
    const r = await runJudgeBench({
      provider: 'cpu',
      model: { name: 'tiny', config },
      k: 4,
      source: 12,
      candidate: 6,
      reps: 2,
      log: (l) => lines.push(l),
    });
    const m = r.reward_model;
    expect(m).toMatchObject({ shape: 'tiny', k: 4, tokens_per_sequence: 18 });
    expect(m.rewards_per_s).toBeCloseTo((4 * 1000) / m.compare_ms, 6);
    // 2 FLOPs per non-embedding weight per token, plus attention.
    const weights = m.parameters - 64 * 32;
    expect(m.gflop_per_pass * 1e9).toBeGreaterThan(2 * weights * 18);
    expect(m.fraction_of_ceiling).toBeCloseTo(m.achieved_gflops / r.ceiling_gflops, 9);
    expect(lines.some((l) => l.includes('compare K=4 2/2'))).toBe(true);
  });
});
