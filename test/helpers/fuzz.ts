/**
 * Seeded input mutation for the fuzz tests (hostile RPCs, file parsers): a failure names its
 * seed, so it replays exactly.
 */

/** mulberry32: small, seeded, good enough to pick mutations. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const noise = (rand: () => number) =>
  Buffer.from(Array.from({ length: Math.floor(rand() * 64) }, () => Math.floor(rand() * 256)));

export function mutate(valid: Uint8Array, rand: () => number): Buffer {
  const int = (n: number) => Math.floor(rand() * n);
  let b = Buffer.from(valid);
  for (let ops = 1 + int(3); ops > 0; ops--) {
    const at = int(b.length + 1);
    switch (int(7)) {
      case 0:
        if (b.length) b[at % b.length]! ^= 1 << int(8);
        break;
      case 1:
        if (b.length) b[at % b.length] = int(256);
        break;
      case 2:
        b = b.subarray(0, at);
        break;
      case 3:
        b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + int(8)))]);
        break;
      case 4:
        b = Buffer.concat([b.subarray(0, at), b.subarray(int(b.length), int(b.length) + 16), b.subarray(at)]);
        break;
      case 5: // a field this schema does not have, of a random wire type
        b = Buffer.concat([b, Buffer.from([((20 + int(100)) << 3) | int(6)]), noise(rand)]);
        break;
      default: // the largest varint where a length or count may sit
        b = Buffer.concat([
          b.subarray(0, at),
          Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
          b.subarray(at),
        ]);
    }
  }
  return b;
}

const WEIRD: unknown[] = [
  null,
  -1,
  0,
  1e308,
  -1e-308,
  2 ** 53 + 1,
  '',
  'x'.repeat(10_000),
  [],
  {},
  [[]],
  true,
  '../../etc/passwd',
  'NaN',
];

/**
 * A structural mutation of a JSON value: one to three times, a random place in the tree gets a
 * value of another type or size, loses a key, or gains one.
 */
export function mutateJson(valid: unknown, rand: () => number): unknown {
  const int = (n: number) => Math.floor(rand() * n);
  // A fresh copy each time: a shared {} could otherwise end up inside itself.
  const weird = () => structuredClone(WEIRD[int(WEIRD.length)]);
  const root = { v: structuredClone(valid) as unknown };
  for (let ops = 1 + int(3); ops > 0; ops--) {
    // Walk down a random path, remembering the container and key of the current node.
    let parent: Record<string, unknown> | unknown[] = root;
    let key: string | number = 'v';
    for (let depth = 0; depth < 6; depth++) {
      const node: unknown = (parent as Record<string | number, unknown>)[key];
      if (node === null || typeof node !== 'object' || rand() < 0.3) break;
      const keys: (string | number)[] = Array.isArray(node) ? node.map((_, i) => i) : Object.keys(node);
      if (keys.length === 0) break;
      parent = node as Record<string, unknown>;
      key = keys[int(keys.length)]!;
    }
    const target = parent as Record<string | number, unknown>;
    const r = int(4);
    if (r === 0 && !Array.isArray(parent) && parent !== root) delete target[key];
    else if (r === 1 && !Array.isArray(parent)) target[`unknown_${int(100)}`] = weird();
    else target[key] = weird();
  }
  return root.v;
}
