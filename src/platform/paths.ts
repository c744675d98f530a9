/** Locations inside the installed package, valid both from src/ (tests) and dist/src/ (built). */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

/** The package root: the nearest ancestor of this module holding proto/duel. */
export function packageRoot(): string {
  if (root) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'proto', 'duel'))) {
    const parent = dirname(dir);
    if (parent === dir)
      throw new Error('cannot find the duel package root (proto/duel) above ' + import.meta.url);
    dir = parent;
  }
  root = dir;
  return dir;
}

export function protoRoot(): string {
  return join(packageRoot(), 'proto');
}

/** The `duel` command as built (the bundle `npm run build` writes; package.json's bin). */
export function duelBin(): string {
  return join(packageRoot(), 'dist', 'bin', 'main.js');
}

/** `duel serve` started from V8's code cache (src/cli/serve-launcher.ts): what images and local clusters run. */
export function duelServeBin(): string {
  return join(packageRoot(), 'dist', 'bin', 'duel-serve.js');
}

/**
 * A bench script as tsc builds it (`dist/bench/<name>`), for benches that run a peer in its own
 * process: wherever the bench itself runs from (the CLI's bundle in dist/bin, dist/bench, or the
 * sources under vitest), the peer is the built file, never a path beside the caller.
 */
export function benchScript(name: string): string {
  return builtFile(join('bench', name));
}

/** A module as tsc builds it (`dist/<relative>`), to import or run by path from any caller. */
export function builtFile(relative: string): string {
  return join(packageRoot(), 'dist', relative);
}

export function packageVersion(): string {
  return (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string })
    .version;
}
