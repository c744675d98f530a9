/**
 * IEEE half-precision bits ↔ float32, for float16 safetensors (Node 20 has no Float16Array).
 * Float32 → half rounds to nearest even and saturates to ±Inf like numpy's astype(float16).
 */
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

export function floatToHalf(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    // Subnormal: the significand shifted right by 14 − e, rounded half to even.
    const shift = 14 - e;
    const m = mant | 0x800000;
    const q = m >>> shift;
    const r = m & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    return sign | (r > halfway || (r === halfway && q & 1) ? q + 1 : q);
  }
  const half = sign | (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  return rest > 0x1000 || (rest === 0x1000 && half & 1) ? half + 1 : half;
}

export function halvesToFloats(bits: Uint16Array): Float32Array {
  return Float32Array.from(bits, halfToFloat);
}

export function floatsToHalves(xs: Float32Array | Float64Array): Uint16Array {
  return Uint16Array.from(xs, floatToHalf);
}
