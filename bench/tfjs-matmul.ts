/**
 * The one TensorFlow.js figure BENCHMARKS.md quotes besides the step time: wasm MatMul of
 * 2048×256 by 2048×1024 with and without transposeA (the form tfjs's autodiff emits for weight
 * gradients). `node dist/bench/tfjs-matmul.js` prints one JSON line (median of 3 after a warm-up).
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';

await tf.setBackend('wasm');
const x = tf.randomNormal([2048, 256]);
const w = tf.randomNormal([256, 1024]);
const y = tf.randomNormal([2048, 1024]);
const time = (f: () => tf.Tensor) => {
  f().dataSync();
  const ms = [0, 1, 2].map(() => {
    const t0 = performance.now();
    f().dataSync();
    return performance.now() - t0;
  });
  return ms.sort((a, b) => a - b)[1]!;
};
const plain = time(() => tf.matMul(x, w));
const transposeA = time(() => tf.matMul(x, y, true, false));
process.stdout.write(
  `${JSON.stringify({ plain_ms: plain, transpose_a_ms: transposeA, ratio: transposeA / plain })}\n`,
);
