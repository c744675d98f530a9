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
