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

// ── dim arithmetic ─────────────────────────────────────────────────────────
// A symbolic dim may be an expression over symbols: a product ('B*T', '4*H') or a sum of
// products ('P+1'). Expressions are kept in one canonical spelling, so equal dims compare equal
// as strings, and the lowering evaluates them from the inputs that bind their symbols.
interface Term {
  coef: number;
  syms: string[];
}

function termsOf(d: Dim): Term[] {
  if (typeof d === 'number') return d === 0 ? [] : [{ coef: d, syms: [] }];
  return d.split('+').map((part) => {
    let coef = 1;
    const syms: string[] = [];
    for (const f of part.split('*')) {
      if (/^\d+$/.test(f)) coef *= Number(f);
      else syms.push(f);
    }
    return { coef, syms: syms.sort() };
  });
}

function dimOf(terms: Term[]): Dim {
  const merged = new Map<string, Term>();
  for (const t of terms) {
    const key = t.syms.join('*');
    const prev = merged.get(key);
    merged.set(key, { coef: (prev?.coef ?? 0) + t.coef, syms: t.syms });
  }
  const live = [...merged.entries()].filter(([, t]) => t.coef !== 0);
  const constant = live.find(([k]) => k === '')?.[1].coef ?? 0;
  const symbolic = live.filter(([k]) => k !== '').sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  if (symbolic.length === 0) return constant;
  const parts = symbolic.map(([k, t]) => (t.coef === 1 ? k : `${t.coef}*${k}`));
  if (constant) parts.push(String(constant));
  return parts.join('+');
}

export function addDims(a: Dim, b: Dim): Dim {
  return dimOf([...termsOf(a), ...termsOf(b)]);
}

export function mulDims(a: Dim, b: Dim): Dim {
  const ta = termsOf(a);
  const tb = termsOf(b);
  return dimOf(
    ta.flatMap((x) => tb.map((y) => ({ coef: x.coef * y.coef, syms: [...x.syms, ...y.syms].sort() }))),
  );
}

/** a / b when it divides exactly as a monomial (e.g. 'B*T' / 'T' = 'B'); otherwise undefined. */
export function divDims(a: Dim, b: Dim): Dim | undefined {
  const ta = termsOf(a);
  const tb = termsOf(b);
  if (tb.length !== 1) return undefined;
  const [d] = tb as [Term];
  const out: Term[] = [];
  for (const t of ta) {
    const syms = [...t.syms];
    for (const s of d.syms) {
      const i = syms.indexOf(s);
      if (i < 0) return undefined;
      syms.splice(i, 1);
    }
    if (t.coef % d.coef !== 0) return undefined;
    out.push({ coef: t.coef / d.coef, syms });
  }
  return dimOf(out);
}

/** The dim as a sum of products of symbols (for evaluating an expression at run time). */
export function dimTerms(d: Dim): { coef: number; syms: string[] }[] {
  return termsOf(d);
}

export function prodDims(shape: Shape): Dim {
  return shape.reduce<Dim>((a, b) => mulDims(a, b), 1);
}
