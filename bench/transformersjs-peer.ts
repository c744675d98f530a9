/**
 * The peer of `duel bench decode`: transformers.js (Hugging Face's JavaScript library, on the
 * same onnxruntime-node) generating from the ONNX model duel exported, in its own process so
 * its threads and memory are its own. No EOS, so every row makes exactly `newTokens`; sampling
 * at temperature 1 without truncation (top_k 0), or greedy. Median of `repeats` runs.
 * Prints one JSON line: {batch, seconds, tokens_per_s}.
 */
import { AutoModelForCausalLM, env, Tensor } from '@huggingface/transformers';

const [root, name, batchArg, promptArg, newArg, mode, repeatsArg] = process.argv.slice(2);
const [batch, promptLen, newTokens] = [Number(batchArg), Number(promptArg), Number(newArg)];
env.allowRemoteModels = false;
env.localModelPath = `${root}/`;
const model = await AutoModelForCausalLM.from_pretrained(name!, {
  local_files_only: true,
  dtype: 'fp32',
  device: 'cpu',
});
const ids = new Tensor(
  'int64',
  BigInt64Array.from({ length: batch * promptLen }, (_, i) => BigInt(4 + (i % 7))),
  [batch, promptLen],
);
const sample = mode !== 'greedy';
const run = (n: number) =>
  model.generate({
    input_ids: ids,
    max_new_tokens: n,
    min_new_tokens: n,
    do_sample: sample,
    ...(sample ? { temperature: 1, top_k: 0 } : {}),
  });
await run(2); // warm-up
const times: number[] = [];
for (let i = 0; i < Number(repeatsArg ?? 3); i++) {
  const t0 = performance.now();
  await run(newTokens);
  times.push((performance.now() - t0) / 1000);
}
const seconds = times.sort((a, b) => a - b)[Math.floor(times.length / 2)]!;
process.stdout.write(`${JSON.stringify({ batch, seconds, tokens_per_s: (batch * newTokens) / seconds })}\n`);
