/**
 * `duel doctor`: what this machine offers duel's runtime, for an operator: the execution providers
 * ONNX Runtime's binding was built with, the WebGPU adapter Dawn finds with the toggles ONNX
 * Runtime requests it with (vendor, device, software or not, float16 shaders with and without
 * those toggles, limits) or what to install when there is none, the Vulkan drivers present,
 * whether the cuda provider loads (or which libraries it lacks), and the provider
 * DUEL_RUNTIME_PROVIDER selects. Exit 1 when the selected provider cannot run.
 */
import { createRequire } from 'node:module';
import type { Command } from 'commander';
import { cudaLibraries } from '../../platform/cuda.js';
import {
  findAdapter,
  NO_ADAPTER_HELP,
  ORT_ADAPTER_TOGGLES,
  vulkanDrivers,
} from '../../platform/gpu-adapter.js';
import { envProvider } from '../runtime.js';

export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description(
      'the execution providers, the GPU adapter and the CUDA provider this machine offers (exit 1 if the selected one cannot run)',
    )
    .option('--json', 'print one JSON object')
    .action(async (o: { json?: boolean }) => {
      const selected = envProvider();
      // onnxruntime-node is CommonJS and large: loaded here only, never by `duel --help`.
      const ort = createRequire(import.meta.url)('onnxruntime-node') as typeof import('onnxruntime-node');
      const built = ort.listSupportedBackends().map((b) => b.name);
      const adapter = await findAdapter();
      // The same adapter asked for without toggles, as `doctor` did before: on NVIDIA's Vulkan
      // driver the two can differ in float16 (gpu-adapter.ts, ORT_ADAPTER_TOGGLES).
      const bare = adapter ? await findAdapter([]) : undefined;
      const report = {
        node: process.version,
        onnxruntime: ort.env.versions.common,
        providers: built,
        selected,
        webgpu: adapter
          ? { ...adapter, toggles: ORT_ADAPTER_TOGGLES, shaderF16WithoutToggles: bare?.shaderF16 ?? false }
          : { error: NO_ADAPTER_HELP },
        vulkan_drivers: vulkanDrivers(),
      };
      const cuda = await checkCuda();
      const usable = selected === 'cpu' ? true : selected === 'webgpu' ? adapter !== undefined : cuda.loads;
      if (o.json) process.stdout.write(`${JSON.stringify({ ...report, cuda })}\n`);
      else {
        const lines: [string, string][] = [
          ['node', report.node],
          ['onnxruntime-node', report.onnxruntime],
          ['providers built in', built.join(', ')],
          ['selected', `${selected} (DUEL_RUNTIME_PROVIDER)`],
          [
            'webgpu adapter',
            adapter
              ? `${adapter.vendor} ${adapter.device} (${adapter.fallback ? 'software adapter' : adapter.architecture}), ${adapter.description}`
              : NO_ADAPTER_HELP,
          ],
          [
            'shader-f16',
            adapter
              ? `${adapter.shaderF16} with ONNX Runtime's adapter toggles (${ORT_ADAPTER_TOGGLES.join(', ')}), ${bare?.shaderF16 ?? false} without`
              : '-',
          ],
          [
            'largest buffer',
            adapter
              ? `${(adapter.limits.maxBufferSize / 2 ** 20).toFixed(0)} MiB (storage binding ${(adapter.limits.maxStorageBufferBindingSize / 2 ** 20).toFixed(0)} MiB)`
              : '-',
          ],
          ['vulkan drivers', report.vulkan_drivers.join(', ') || 'none'],
          [
            'cuda provider',
            cuda.loads
              ? `loads (ONNX Runtime ${cuda.version} at ${cuda.core})`
              : `${cuda.error}${cuda.core ? ` (ONNX Runtime ${cuda.version} at ${cuda.core})` : ''}`,
          ],
        ];
        for (const [k, v] of lines) process.stdout.write(`${k.padEnd(20)} ${v}\n`);
      }
      if (!usable) process.exitCode = 1;
    });
}

/**
 * Whether the cuda provider runs here: what its library lacks (ldd), and when nothing is missing,
 * a one-node graph run on it through a Runtime, as a service would run one.
 */
async function checkCuda(): Promise<ReturnType<typeof cudaLibraries> & { loads: boolean }> {
  const libs = cudaLibraries();
  if (libs.error) return { ...libs, loads: false };
  const { compile, Graph, Runtime, T } = await import('../../engine/index.js');
  const runtime = new Runtime({ provider: 'cuda', ...(libs.core ? { onnxruntimeNode: libs.core } : {}) });
  try {
    const g = new Graph();
    const session = await runtime.load(compile(g, { y: T.neg(g.input('x', 'float32', [2])) }, 'probe'));
    await session.run({ x: { dtype: 'float32', dims: [2], data: Float32Array.from([1, 2]) } }, ['y']);
    return { ...libs, loads: true };
  } catch (e) {
    return { ...libs, loads: false, error: (e as Error).message.split('\n')[0] };
  } finally {
    await runtime.close();
  }
}
