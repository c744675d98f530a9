import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // onnxruntime-node and grpc are native addons: forks isolate them better than worker threads.
    pool: 'forks',
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
