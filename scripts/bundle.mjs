// Bundles the `duel` command into dist/bin/ (run by `npm run build` after tsc): one module graph
// instead of hundreds of files cuts a service's cold start (BENCHMARKS.md), and each command still
// loads only its own chunk. The ONNX Runtime worker is its own entry beside main.js, where the
// runtime looks for it. Packages stay external when they read files next to their own sources
// (reflection's and health-check's protos), are native (onnxruntime-node, Dawn's webgpu, koffi), carry 4 MB of WebAssembly few services
// load (SentencePiece), or are only benchmark peers. pino is bundled: its transports would need its files, but duel logs to a file descriptor
// (src/platform/logger.ts), and loading it from node_modules cost every service 5 ms of module
// resolution (BENCHMARKS.md). Reflection, loaded once a service is serving, brings its own grpc-js
// from node_modules; it only registers a service on the bundled server.
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { build } from 'esbuild';

const outdir = 'dist/bin';
const EXTERNAL = [
  'onnxruntime-node',
  'webgpu',
  '@grpc/reflection',
  '@grpc/proto-loader',
  'grpc-health-check',
  'protobufjs',
  '@huggingface/transformers',
  '@tensorflow/*',
  '@sctg/sentencepiece-js',
  'koffi',
];
rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: {
    main: 'dist/src/cli/main.js',
    worker: 'dist/src/engine/runtime/worker.js',
    'duel-serve': 'dist/src/cli/serve-launcher.js',
  },
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  entryNames: '[name]',
  chunkNames: '[name]-[hash]',
  external: EXTERNAL,
  // CommonJS dependencies call require(); an ES module has none of its own.
  banner: {
    js: "import { createRequire as __duelRequire } from 'node:module'; const require = __duelRequire(import.meta.url);",
  },
  logLevel: 'warning',
});

// `duel serve` alone as CommonJS, for src/cli/serve-launcher.ts to run from V8's code cache (Node
// 20 caches no compiled ES modules), and one cache per role, written by evaluating what the role
// loads. Its import() becomes require() (a vm.Script without a dynamic-import callback), except
// the launcher's own, lent to src/esm-import.ts for ES-module-only packages.
await build({
  entryPoints: { serve: 'dist/src/cli/serve-entry.js' },
  outdir,
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  outExtension: { '.js': '.cjs' },
  external: EXTERNAL,
  supported: { 'dynamic-import': false },
  define: { 'import.meta.url': '__duelImportMetaUrl' },
  banner: { js: "const __duelImportMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
  logLevel: 'warning',
});
const { ROLES } = await import('../dist/src/cli/commands/serve.js');
for (const role of Object.keys(ROLES)) {
  const r = spawnSync(process.execPath, [`${outdir}/duel-serve.js`, '--write-code-cache', role], {
    stdio: 'inherit',
  });
  if (r.status !== 0) throw new Error(`writing ${role}'s code cache exited ${r.status ?? r.signal}`);
}
