/**
 * Shapes: a dimension is a number or a symbol (a string such as 'B' or 'T') whose value is known
 * only when the graph runs. Broadcasting follows NumPy/ONNX: align right, 1 stretches.
 */
export type Dim = number | string;
export type Shape = readonly Dim[];

export function shapeString(shape: Shape): string {
  return `[${shape.join(', ')}]`;
}

export function isStatic(shape: Shape): shape is readonly number[] {
  return shape.every((d) => typeof d === 'number');
}

export function numel(shape: Shape): number {
  if (!isStatic(shape))
    throw new Error(`shape ${shapeString(shape)} has symbolic dims: its size is not known at trace time`);
  return shape.reduce((a, b) => a * b, 1);
}

/** The broadcast of two shapes, or undefined when they are incompatible. */
export function broadcast(a: Shape, b: Shape): Dim[] | undefined {
  const n = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x === y || y === 1) out.push(x);
    else if (x === 1) out.push(y);
    else return undefined;
  }
  return out;
}

/** Normalizes a possibly negative axis for a tensor of `rank` dims. */
export function axisOf(axis: number, rank: number, op: string): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank)
    throw new Error(`${op}: axis ${axis} is out of range for rank ${rank}`);
  return a;
}

export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
