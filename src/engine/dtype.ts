/** Element types the engine traces, with their ONNX codes and JS storage. */

export type DType = 'float32' | 'float64' | 'float16' | 'int64' | 'int32' | 'bool';

/** onnx.TensorProto.DataType codes. */
export const ONNX_DTYPE: Record<DType, number> = {
  float32: 1,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
  float64: 11,
};

export type TypedArray = Float32Array | Float64Array | Uint16Array | BigInt64Array | Int32Array | Uint8Array;

export function isFloat(dtype: DType): boolean {
  return dtype === 'float32' || dtype === 'float64' || dtype === 'float16';
}

export function bytesPer(dtype: DType): number {
  return { float32: 4, float64: 8, float16: 2, int64: 8, int32: 4, bool: 1 }[dtype];
}

/** An array of `n` zeros of the dtype's storage type (float16 is stored as raw Uint16 bits). */
export function allocate(dtype: DType, n: number): TypedArray {
  switch (dtype) {
    case 'float32':
      return new Float32Array(n);
    case 'float64':
      return new Float64Array(n);
    case 'float16':
      return new Uint16Array(n);
    case 'int64':
      return new BigInt64Array(n);
    case 'int32':
      return new Int32Array(n);
    case 'bool':
      return new Uint8Array(n);
  }
}

/**
 * `values` in the dtype's storage: float16 as half-precision bit patterns (a plain store into its
 * Uint16Array would truncate 0.25 to 0), int64 truncated to BigInts, bool as 0/1. Every number
 * that becomes a tensor goes through here.
 */
export function fromNumbers(dtype: DType, values: readonly number[]): TypedArray {
  if (dtype === 'float16') return toFloat16(values);
  if (dtype === 'int64') return BigInt64Array.from(values, (v) => BigInt(Math.trunc(v)));
  const out = allocate(dtype, values.length) as Exclude<TypedArray, BigInt64Array>;
  out.set(values);
  return out;
}

/**
 * float32 values → IEEE half-precision bit patterns (how a float16 tensor's data is stored here;
 * Node 20 has no Float16Array), rounding to nearest even; overflow goes to ±Infinity.
 */
export function toFloat16(xs: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(xs.length);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < xs.length; i++) {
    f[0] = xs[i]!;
    const x = u[0]!;
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    const mant = x & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (mant ? 0x200 : 0);
      continue;
    }
    const e = exp - 127 + 15;
    if (e >= 0x1f) {
      out[i] = sign | 0x7c00;
      continue;
    }
    if (e <= 0) {
      // Subnormal (or zero) in half precision: shift the mantissa with its implicit bit in.
      if (e < -10) {
        out[i] = sign;
        continue;
      }
      const m = mant | 0x800000;
      const shift = 14 - e;
      const half = m >>> shift;
      const rest = m & ((1 << shift) - 1);
      const mid = 1 << (shift - 1);
      out[i] = sign | (half + (rest > mid || (rest === mid && half & 1) ? 1 : 0));
      continue;
    }
    const half = (e << 10) | (mant >>> 13);
    const rest = mant & 0x1fff;
    // A carry out of the mantissa moves into the exponent, as rounding should.
    out[i] = sign | (half + (rest > 0x1000 || (rest === 0x1000 && half & 1) ? 1 : 0));
  }
  return out;
}

/** IEEE half-precision bit patterns → their float32 values (exactly: every half is a float32). */
export function fromFloat16(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i]!;
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    out[i] =
      exp === 0
        ? sign * mant * 2 ** -24
        : exp === 0x1f
          ? mant
            ? Number.NaN
            : sign * Number.POSITIVE_INFINITY
          : sign * (1 + mant / 1024) * 2 ** (exp - 15);
  }
  return out;
}
