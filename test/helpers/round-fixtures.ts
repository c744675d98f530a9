/**
 * A round's fixtures shared by the tests that train one: a one-layer Llama, two records of three
 * completions with their preference matrices, and each round recipe's hyper-parameters.
 */
import { parseLlamaConfig } from '../../src/models/llama/config.js';

export const ROUND_CONFIG = parseLlamaConfig({
  model_type: 'llama',
  vocab_size: 11,
  hidden_size: 8,
  intermediate_size: 16,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  tie_word_embeddings: true,
  pad_token_id: 0,
});

export const ROUND_RECORDS = [
  {
    prompt_ids: [1, 2],
    completion_ids: [[3, 4], [5], [6, 7, 8]],
    prefs: [
      [0.5, 0.8, 0.3],
      [0.2, 0.5, 0.6],
      [0.7, 0.4, 0.5],
    ],
  },
  {
    prompt_ids: [9],
    completion_ids: [[2, 2], [4, 1], [10]],
    prefs: [
      [0.5, 0.1, 0.45],
      [0.9, 0.5, 0.65],
      [0.55, 0.35, 0.5],
    ],
  },
];

/** Every completion of the records as one sequence: prompt ids and completion ids. */
export const ROUND_SEQUENCES = ROUND_RECORDS.flatMap((r) =>
  r.completion_ids.map((c) => ({ promptIds: r.prompt_ids, completionIds: c })),
);

/** Hyper-parameters of the recipes the step tests train, some twice under another setting. */
export const HPARAMS: Record<string, Record<string, unknown>> = {
  sppo: { eta: 2 },
  inpo: { eta: 2, tau: 0.2 },
  online_dpo: { beta: 0.5 },
  online_ipo: { tau: 0.25 },
  nash_md: { beta: 0.1 },
  spo: { alpha: 1.5, kl_coef: 0.3 },
  slic: { beta: 0.5 },
  discopop: { beta: 0.5, tau: 0.2 },
  sppo_all: { eta: 2, sppo_pairs: 'all' },
  ipo_soft: { tau: 0.25, labels: 'soft' },
  inpo_soft: { eta: 2, tau: 0.2, k: 3, inpo_labels: 'soft' },
};
/** Test cases that are a recipe under another hyper-parameter setting. */
export const ALGO_OF: Record<string, string> = {
  sppo_all: 'sppo',
  ipo_soft: 'online_ipo',
  inpo_soft: 'inpo',
};
