/** `duel doctor` and a service's start on the webgpu provider, with and without a Vulkan driver. */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
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
