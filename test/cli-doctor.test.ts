/** `duel doctor` and a service's start on the webgpu provider, with and without a Vulkan driver. */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { compile, Graph, Runtime, T } from '../src/engine/index.js';
import { duelBin } from '../src/platform/paths.js';

const duel = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  spawnSync(process.execPath, [duelBin(), ...args], {
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, DUEL_LOG_LEVEL: 'info', ...env },
  });
/** The Vulkan loader tries only the drivers this names: none that exists, so Dawn finds no adapter. */
const NO_DRIVER = { VK_ICD_FILENAMES: '/nonexistent/icd.json', VK_DRIVER_FILES: '/nonexistent/icd.json' };

describe('duel doctor', () => {
  it('reports the providers, the adapter Dawn finds and its limits', () => {
    const r = duel(['doctor', '--json'], { DUEL_RUNTIME_PROVIDER: 'webgpu' });
    expect(r.status).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.providers).toEqual(expect.arrayContaining(['cpu', 'webgpu']));
    expect(report.selected).toBe('webgpu');
    expect(report.webgpu.vendor).toBeTruthy();
    expect(report.webgpu.limits.maxStorageBufferBindingSize).toBeGreaterThan(0);
    // Asked for as ONNX Runtime asks for its adapter; lavapipe offers float16 either way (an
    // NVIDIA Vulkan driver only with vulkan_enable_f16_on_nvidia).
    expect(report.webgpu.toggles).toContain('vulkan_enable_f16_on_nvidia');
    expect(report.webgpu.shaderF16).toBe(true);
    expect(report.webgpu.shaderF16WithoutToggles).toBe(true);
    expect(report.vulkan_drivers.length).toBeGreaterThan(0);
  });

  it('without a Vulkan driver says what to install, and exits 1 only when webgpu is the selected provider', () => {
    const gpu = duel(['doctor'], { ...NO_DRIVER, DUEL_RUNTIME_PROVIDER: 'webgpu' });
    expect(gpu.status).toBe(1);
    expect(gpu.stdout).toMatch(/no WebGPU adapter.*mesa-vulkan-drivers/);
    expect(duel(['doctor'], { ...NO_DRIVER, DUEL_RUNTIME_PROVIDER: 'cpu' }).status).toBe(0);
    const bad = duel(['doctor'], { DUEL_RUNTIME_PROVIDER: 'tpu' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/DUEL_RUNTIME_PROVIDER: must be one of cpu, webgpu, cuda, got 'tpu'/);
  });
});

describe('the cuda provider, opt in', () => {
  it('installs beside the default ONNX Runtime, and doctor names what the CUDA provider lacks here', async () => {
    // ONNX Runtime 1.29's core and Microsoft's CUDA 13 provider from the npm registry (≈200 MB,
    // once; a second run finds them).
    const setup = spawnSync('bash', ['scripts/setup.sh', '--cuda'], { encoding: 'utf8', timeout: 600_000 });
    expect(setup.status, setup.stderr).toBe(0);
    expect(setup.stdout).toMatch(/cuda: (done|ONNX Runtime 1\.29\.0 with its CUDA provider already)/);
    const r = duel(['doctor', '--json'], { DUEL_RUNTIME_PROVIDER: 'cuda' });
    const { cuda } = JSON.parse(r.stdout);
    expect(cuda.version).toBe('1.29.0');
    expect(cuda.core).toMatch(/\.cache\/ort-cuda\/node_modules\/onnxruntime-node$/);
    if (cuda.loads) expect(r.status).toBe(0);
    else {
      // A machine without CUDA 13 and the NVIDIA driver (this project's CI): every missing
      // library named at once, and the selected provider cannot run.
      expect(cuda.missing).toEqual(expect.arrayContaining(['libcublas.so.13', 'libcuda.so.1']));
      for (const lib of cuda.missing) expect(cuda.error).toContain(lib);
      expect(r.status).toBe(1);
    }
    // The default install is untouched: the cpu provider still runs the 1.30 core.
    const plain = duel(['doctor', '--json']);
    expect(plain.status).toBe(0);
    expect(JSON.parse(plain.stdout).onnxruntime).toBe('1.30.0');

    // A Runtime loads the core it is given in its workers (the cuda provider's; here on the cpu
    // provider, which that core has too), and a core that is not there is an error naming it.
    const run = async (onnxruntimeNode: string) => {
      const rt = new Runtime({ onnxruntimeNode });
      try {
        const g = new Graph();
        const s = await rt.load(compile(g, { y: T.neg(g.input('x', 'float32', [2])) }, 'neg'));
        return Array.from(
          (await s.run({ x: { dtype: 'float32', dims: [2], data: Float32Array.of(1, 2) } }, ['y'])).y!
            .data as Float32Array,
        );
      } finally {
        await rt.close();
      }
    };
    expect(await run(cuda.core)).toEqual([-1, -2]);
    await expect(run('/nonexistent/onnxruntime-node')).rejects.toThrow(/nonexistent\/onnxruntime-node/);
  }, 600_000);
});

describe('a service on the webgpu provider', () => {
  it('refuses to start without an adapter, naming what to install', () => {
    const r = duel(['serve', 'scorer', '--nats', 'memory:'], {
      ...NO_DRIVER,
      DUEL_RUNTIME_PROVIDER: 'webgpu',
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/duel: no WebGPU adapter.*mesa-vulkan-drivers/);
  });
});
