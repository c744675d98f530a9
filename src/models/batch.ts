/**
 * Prompt + completion records as padded batches, the layout the log-prob and training graphs
 * read: right-padded input ids and mask, next-token targets, and a mask that keeps only the
 * completion's tokens (the prompt is context, not something the model is scored on).
 */
import { DuelError } from '../errors.js';

export interface CompletionRecord {
  promptIds: number[];
  completionIds: number[];
}

export interface CompletionBatch {
  batch: number;
  length: number;
  inputIds: BigInt64Array;
  attentionMask: BigInt64Array;
  targets: BigInt64Array;
  targetMask: Float32Array;
}

export function completionBatch(
  records: CompletionRecord[],
  padId: number,
  vocabSize: number,
): CompletionBatch {
  records.forEach((r, i) => {
    if (r.promptIds.length === 0)
      throw DuelError.invalidArgument([{ field: `records[${i}].prompt_ids`, description: 'is empty' }]);
    for (const [field, ids] of [
      ['prompt_ids', r.promptIds],
      ['completion_ids', r.completionIds],
    ] as const) {
      const bad = ids.find((id) => !Number.isInteger(id) || id < 0 || id >= vocabSize);
      if (bad !== undefined)
        throw DuelError.invalidArgument([
          {
            field: `records[${i}].${field}`,
            description: `token id ${bad} is outside the vocabulary [0, ${vocabSize})`,
          },
        ]);
    }
  });
  const length = Math.max(...records.map((r) => r.promptIds.length + r.completionIds.length));
  const n = records.length * length;
  const out: CompletionBatch = {
    batch: records.length,
    length,
    inputIds: new BigInt64Array(n).fill(BigInt(padId)),
    attentionMask: new BigInt64Array(n),
    targets: new BigInt64Array(n).fill(BigInt(padId)),
    targetMask: new Float32Array(n),
  };
  records.forEach((r, b) => {
    const seq = [...r.promptIds, ...r.completionIds];
    const row = b * length;
    seq.forEach((id, t) => {
      out.inputIds[row + t] = BigInt(id);
      out.attentionMask[row + t] = 1n;
      if (t > 0) out.targets[row + t - 1] = BigInt(id);
      // position t − 1 predicts token t; score it when token t belongs to the completion
      if (t >= r.promptIds.length) out.targetMask[row + t - 1] = 1;
    });
  });
  return out;
}
