/**
 * `node dist/bin/duel-serve.js ROLE [flags]` is `duel serve ROLE [flags]` started from V8's code
 * cache: the service bundle (dist/bin/serve.cjs) compiled at build time and kept beside it as
 * `serve.ROLE.v8cache`, so a starting service deserializes compiled code instead of parsing and
 * compiling its JavaScript (a third of an orchestrator's start: BENCHMARKS.md, cold start). Node 20
 * has no compile cache for ES modules (22's module.enableCompileCache), hence a CommonJS bundle run
 * through vm.Script, the one API that takes cachedData. A cache V8 rejects (another Node, another
 * bundle) costs only the compile it would have saved; nothing is written at run time (images have
 * read-only file systems): `node dist/bin/duel-serve.js --write-code-cache ROLE` writes it, and
 * `npm run build` runs that for every role.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import vm from 'node:vm';

interface ServeBundle {
  main(args: string[], importer: (specifier: string) => Promise<unknown>): Promise<void>;
  warm(role: string): Promise<void>;
}

const dir = dirname(fileURLToPath(import.meta.url));
const bundle = join(dir, 'serve.cjs');
const args = process.argv.slice(2);
const writing = args[0] === '--write-code-cache';
const role = (writing ? args[1] : args[0]) ?? '';
const cacheFile = join(dir, `serve.${/^[a-z]+$/.test(role) ? role : 'other'}.v8cache`);

// The launcher is an ES module (its import() is real); the bundle it runs is CommonJS.
let cachedData: Buffer | undefined;
if (!writing)
  try {
    cachedData = readFileSync(cacheFile);
  } catch {
    // No cache: compile as any script would.
  }
// CommonJS's module wrapper, so the bundle's require, module and __filename are its own.
const script = new vm.Script(
  `(function (exports, require, module, __filename, __dirname) {${readFileSync(bundle, 'utf8')}\n})`,
  { filename: bundle, ...(cachedData ? { cachedData } : {}) },
);
const module = { exports: {} as ServeBundle };
script.runInThisContext()(module.exports, createRequire(bundle), module, bundle, dir);
// Read by `duel serve`'s "serving" log line.
process.env.DUEL_CODE_CACHE = cachedData ? (script.cachedDataRejected ? 'rejected' : 'accepted') : 'absent';

if (writing) {
  await module.exports.warm(role);
  writeFileSync(cacheFile, script.createCachedData());
} else {
  await module.exports.main(args, (specifier) => import(specifier));
}
