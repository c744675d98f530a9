/**
 * The peer of `duel bench engine`: the reference stack's training step written in TensorFlow.js
 * on its WebAssembly backend (tfjs-node downloads libtensorflow at install, which this project
 * cannot reach; wasm is the fastest backend that installs from npm alone). Run as its own
 * process so its memory and threads are measured apart from duel's. Prints one JSON line.
 *
 * The wasm backend has no UnsortedSegmentSum kernel, so tf.gather has no gradient there; the
 * embedding's gradient is written as onehot(ids)ᵀ·dy, the form TensorFlow's own dense fallback
 * takes. It is counted in neither side's FLOPs.
 */
import * as tf from '@tensorflow/tfjs';
import { setThreadsCount } from '@tensorflow/tfjs-backend-wasm';
import { STACK, stackBatch } from './reference-stack.js';

const steps = Number(process.argv[2] ?? 3);
const threads = Number(process.argv[3] ?? 0);

if (threads > 0) setThreadsCount(threads);
await tf.setBackend('wasm');

const { dModel: H, layers: L, heads: NH, vocab: V, seq: T, batch: B, ffn: F } = STACK;
const D = H / NH;
const N = B * T;
const init = (shape: number[], std = 0.02) => tf.variable(tf.randomNormal(shape, 0, std, 'float32', 7));
const ones = (n: number) => tf.variable(tf.ones([n]));

const embed = init([V, H]);
const blocks = Array.from({ length: L }, () => ({
  ln1: ones(H),
  wq: init([H, H]),
  wk: init([H, H]),
  wv: init([H, H]),
  wo: init([H, H]),
  ln2: ones(H),
  wg: init([H, F]),
  wu: init([H, F]),
  wd: init([F, H]),
}));
const lnf = ones(H);
const head = init([H, V]);

const { ids: idArray, labels: labelArray } = stackBatch();
const ids = tf.tensor1d(idArray, 'int32');
const idsOneHot = tf.oneHot(ids, V).asType('float32');
const labelsOneHot = tf.oneHot(tf.tensor1d(labelArray, 'int32'), V).asType('float32');

// Rotary tables [T, D] (rotate-half layout) and the causal mask as an additive bias [T, T].
const invFreq = Array.from({ length: D / 2 }, (_, i) => 1 / 10000 ** ((2 * i) / D));
const angles = Array.from({ length: T }, (_, t) => [...invFreq, ...invFreq].map((f) => t * f));
const cos = tf.tensor2d(angles.map((r) => r.map(Math.cos)));
const sin = tf.tensor2d(angles.map((r) => r.map(Math.sin)));
const causal = tf.tensor2d(
  Array.from({ length: T }, (_, i) => Array.from({ length: T }, (_, j) => (j <= i ? 0 : -1e9))),
);

const lookup = tf.customGrad((...args) => ({
  value: tf.gather(args[0] as tf.Tensor, ids),
  gradFunc: (dy) => [tf.matMul(idsOneHot, dy as tf.Tensor, true, false)],
}));

const rmsNorm = (x: tf.Tensor, w: tf.Tensor) =>
  tf.mul(tf.mul(x, tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), 1e-5))), w);

const rope = (x: tf.Tensor) => {
  const x1 = tf.slice(x, [0, 0, 0, 0], [B, NH, T, D / 2]);
  const x2 = tf.slice(x, [0, 0, 0, D / 2], [B, NH, T, D / 2]);
  return tf.add(tf.mul(x, cos), tf.mul(tf.concat([tf.neg(x2), x1], -1), sin));
};

const heads = (x: tf.Tensor) => tf.transpose(tf.reshape(x, [B, T, NH, D]), [0, 2, 1, 3]);

function loss(): tf.Scalar {
  let h = lookup(embed) as tf.Tensor2D;
  for (const blk of blocks) {
    const x = rmsNorm(h, blk.ln1) as tf.Tensor2D;
    const q = rope(heads(tf.matMul(x, blk.wq)));
    const k = rope(heads(tf.matMul(x, blk.wk)));
    const v = heads(tf.matMul(x, blk.wv));
    const scores = tf.add(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(D)), causal);
    const ctx = tf.matMul(tf.softmax(scores), v);
    const merged = tf.reshape(tf.transpose(ctx, [0, 2, 1, 3]), [N, H]) as tf.Tensor2D;
    h = tf.add(h, tf.matMul(merged, blk.wo));
    const y = rmsNorm(h, blk.ln2) as tf.Tensor2D;
    const gate = tf.matMul(y, blk.wg);
    const act = tf.mul(tf.mul(gate, tf.sigmoid(gate)), tf.matMul(y, blk.wu)) as tf.Tensor2D;
    h = tf.add(h, tf.matMul(act, blk.wd));
  }
  const logits = tf.matMul(rmsNorm(h, lnf) as tf.Tensor2D, head);
  return tf.neg(tf.div(tf.sum(tf.mul(tf.logSoftmax(logits), labelsOneHot)), N)) as tf.Scalar;
}

const optimizer = tf.train.adam(1e-3);
const step = () => {
  const value = tf.tidy(() => optimizer.minimize(loss, true) as tf.Scalar);
  const out = value.dataSync()[0]!;
  value.dispose();
  return out;
};

const firstLoss = step(); // warm-up: kernels and buffers
const times: number[] = [];
let lastLoss = firstLoss;
for (let i = 0; i < steps; i++) {
  const t0 = performance.now();
  lastLoss = step();
  times.push(performance.now() - t0);
  process.stderr.write(`  tfjs step ${i + 1}/${steps}: ${times.at(-1)!.toFixed(0)} ms\n`);
}
times.sort((a, b) => a - b);
process.stdout.write(
  `${JSON.stringify({
    backend: tf.getBackend(),
    simd: tf.env().getBool('WASM_HAS_SIMD_SUPPORT'),
    multithread: tf.env().getBool('WASM_HAS_MULTITHREAD_SUPPORT'),
    step_ms: times[Math.floor(times.length / 2)],
    first_loss: firstLoss,
    last_loss: lastLoss,
    peak_rss_mb: process.resourceUsage().maxRSS / 1024,
  })}\n`,
);
