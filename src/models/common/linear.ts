/** nn.Linear in the layout every model here stores its weights in: W [out, in], y = x·Wᵀ (+ b). */
import { T, type Tensor } from '../../engine/index.js';

/**
 * With `fused` (graphs on webgpu, fusedKernelsFor): one Gemm that reads W transposed in place and
 * adds b (T.linear). Otherwise a MatMul over W's transpose, then the bias: the graphs every CPU
 * figure was measured with.
 */
export function linear(x: Tensor, w: Tensor, b: Tensor | undefined, fused: boolean): Tensor {
  if (fused) return T.linear(x, w, b);
  const y = T.matmul(x, T.transposeLast(w));
  return b ? T.add(y, b) : y;
}
