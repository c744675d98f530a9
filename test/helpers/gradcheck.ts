/**
 * One generic numeric gradient checker. The analytic gradient (duel's autodiff, compiled to ONNX,
 * run by ONNX Runtime) must match central finite differences of the same compiled forward pass,
 * in float64. The loss is Σ f(x)·W with a random W so every output element counts differently.
 */
import * as ort from 'onnxruntime-node';
import { grad } from '../../src/engine/autodiff.js';
import { Graph, type Tensor } from '../../src/engine/graph.js';
import { compile } from '../../src/engine/onnx.js';
import * as T from '../../src/engine/ops/index.js';
import { rng } from '../../src/models/common/rng.js';

export interface InputSpec {
  shape: number[];
  /** Draw from (0.5, 1.5) instead of (−1.5, 1.5): for log, sqrt, division, pow bases. */
  positive?: boolean;
}

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

export interface GradcheckResult {
  maxRelError: number;
  checked: number;
}

/** Max of |analytic − numeric| / max(|analytic|, |numeric|, 1e-3) over every input element. */
export async function gradcheck(
  build: (g: Graph, xs: Tensor[]) => Tensor,
  specs: InputSpec[],
  seed = 7,
  h = 1e-6,
): Promise<GradcheckResult> {
  const r = rng(seed);
  const g = new Graph();
  const xs = specs.map((s, i) => g.input(`x${i}`, 'float64', s.shape));
  const y = build(g, xs);
  if (y.dtype !== 'float64') throw new Error(`gradcheck builds must stay float64, got ${y.dtype}`);
  const yShape = y.shape as number[];
  const w = g.constant(
    Float64Array.from({ length: size(yShape) }, () => r() * 2 - 1),
    'float64',
    yShape,
  );
  const loss = T.reduceSum(T.mul(y, w));
  const grads = grad(loss, xs);
  const outputs: Record<string, Tensor> = { loss };
  for (const [i, gi] of grads.entries()) outputs[`g${i}`] = gi;
  const session = await ort.InferenceSession.create(compile(g, outputs).bytes);

  const data = specs.map((s) =>
    Float64Array.from({ length: size(s.shape) }, () => (s.positive ? 0.5 + r() : r() * 3 - 1.5)),
  );
  const feeds = () =>
    Object.fromEntries(specs.map((s, i) => [`x${i}`, new ort.Tensor('float64', data[i]!.slice(), s.shape)]));
  const analytic = await session.run(feeds());
  const lossAt = async () => ((await session.run(feeds(), ['loss'])).loss!.data as Float64Array)[0]!;

  let maxRelError = 0;
  let checked = 0;
  for (let i = 0; i < specs.length; i++) {
    const ga = analytic[`g${i}`]!.data as Float64Array;
    for (let j = 0; j < data[i]!.length; j++) {
      const x0 = data[i]![j]!;
      data[i]![j] = x0 + h;
      const up = await lossAt();
      data[i]![j] = x0 - h;
      const down = await lossAt();
      data[i]![j] = x0;
      const numeric = (up - down) / (2 * h);
      const a = ga[j]!;
      maxRelError = Math.max(
        maxRelError,
        Math.abs(a - numeric) / Math.max(Math.abs(a), Math.abs(numeric), 1e-3),
      );
      checked++;
    }
  }
  session.release();
  return { maxRelError, checked };
}

/** An int64 constant of indices. */
export function indices(g: Graph, values: number[], shape: number[]): Tensor {
  return g.constant(BigInt64Array.from(values.map(BigInt)), 'int64', shape);
}
