// Bundles the `duel` command into dist/bin/ (run by `npm run build` after tsc): one module graph
// instead of hundreds of files cuts a service's cold start (BENCHMARKS.md), and each command still
// loads only its own chunk. The ONNX Runtime worker is its own entry beside main.js, where the
// runtime looks for it. Packages stay external when they read files next to their own sources
// (reflection's and health-check's protos), are native (onnxruntime-node, Dawn's webgpu), or are only benchmark
// peers. pino is bundled: its transports would need its files, but duel logs to a file descriptor
// (src/platform/logger.ts), and loading it from node_modules cost every service 5 ms of module
// resolution (BENCHMARKS.md). Reflection, loaded once a service is serving, brings its own grpc-js
// from node_modules; it only registers a service on the bundled server.
import { rmSync } from 'node:fs';
import { build } from 'esbuild';

const outdir = 'dist/bin';
rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: { main: 'dist/src/cli/main.js', worker: 'dist/src/engine/runtime/worker.js' },
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  entryNames: '[name]',
  chunkNames: '[name]-[hash]',
  external: [
    'onnxruntime-node',
    'webgpu',
    '@grpc/reflection',
    '@grpc/proto-loader',
    'grpc-health-check',
    'protobufjs',
    '@huggingface/transformers',
    '@tensorflow/*',
  ],
  // CommonJS dependencies call require(); an ES module has none of its own.
  banner: {
    js: "import { createRequire as __duelRequire } from 'node:module'; const require = __duelRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
