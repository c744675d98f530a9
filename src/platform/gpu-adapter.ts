/**
 * Which GPU the webgpu provider computes on. ONNX Runtime's Node binding does not say, so this asks
 * Dawn itself, through Dawn's own Node binding (the `webgpu` package): the same Vulkan drivers,
 * the same default high-performance adapter ONNX Runtime's WebGPU provider requests, with the
 * adapter toggles it requests it with (ORT_ADAPTER_TOGGLES). No adapter
 * is a clear error naming what to install, raised before any worker thread loads ONNX Runtime.
 */
import { existsSync, readdirSync } from 'node:fs';
import { DuelError } from '../errors.js';
import { importEsm } from '../esm-import.js';

export interface AdapterInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** A software adapter (lavapipe): correct, not fast. */
  fallback: boolean;
  /** float16 arithmetic in shaders, what float16 compute would need. */
  shaderF16: boolean;
  limits: {
    maxBufferSize: number;
    maxStorageBufferBindingSize: number;
    maxComputeWorkgroupStorageSize: number;
    maxComputeInvocationsPerWorkgroup: number;
  };
}

/** Where Vulkan loaders look for drivers' manifests (ICDs), the NVIDIA container runtime's included. */
const ICD_DIRS = [
  '/usr/share/vulkan/icd.d',
  '/etc/vulkan/icd.d',
  '/usr/local/share/vulkan/icd.d',
  '/usr/local/nvidia/share/vulkan/icd.d',
];

/** The Vulkan driver manifests this machine has. */
export function vulkanDrivers(): string[] {
  // Set, these name the only drivers the loader tries.
  const only = process.env.VK_DRIVER_FILES ?? process.env.VK_ICD_FILENAMES;
  if (only) return only.split(':');
  return ICD_DIRS.filter((d) => existsSync(d)).flatMap((d) =>
    readdirSync(d)
      .filter((f) => f.endsWith('.json'))
      .map((f) => `${d}/${f}`),
  );
}

/** What to install when Dawn finds no adapter. */
export const NO_ADAPTER_HELP =
  'no WebGPU adapter: Dawn found no Vulkan driver that works. On a machine without a GPU install ' +
  "Mesa's lavapipe (Debian 12: mesa-vulkan-drivers and libvulkan1 from bookworm-backports; Debian 13: " +
  'from main; scripts/setup.sh --for-tests does it); on NVIDIA, the Vulkan loader (libvulkan1), ' +
  "GLVND's libraries (libglvnd0, libgl1, libglx0, libegl1, libgles2, libopengl0) and " +
  'NVIDIA_DRIVER_CAPABILITIES including graphics so the container runtime mounts the driver (docs/DEPLOY.md)';

/**
 * The Dawn toggles ONNX Runtime 1.30's WebGPU provider enables on the adapter it requests, as its
 * binary's string table lists them after `use_dxc` and `allow_unsafe_apis` (its
 * GetEnabledAdapterToggles). Adapter features depend on them: Dawn withholds shader-f16 on
 * NVIDIA's Vulkan driver unless `vulkan_enable_f16_on_nvidia` is set (Dawn's PhysicalDeviceVk),
 * so an adapter asked for without them may say "no float16" where ONNX Runtime's says yes.
 */
export const ORT_ADAPTER_TOGGLES = [
  'use_dxc',
  'allow_unsafe_apis',
  'decompose_uniform_buffers',
  'use_vulkan_memory_model',
  'vulkan_enable_f16_on_nvidia',
] as const;

/**
 * The adapter Dawn offers with the given adapter toggles (by default ONNX Runtime's, so its
 * features are the provider's), or undefined when it finds none.
 */
export async function findAdapter(
  toggles: readonly string[] = ORT_ADAPTER_TOGGLES,
): Promise<AdapterInfo | undefined> {
  // Dawn's loader complains on stderr without a runtime directory; it needs none.
  process.env.XDG_RUNTIME_DIR ??= '/tmp';
  const { create } = (await importEsm('webgpu')) as {
    create: (flags: string[]) => { requestAdapter(o: object): Promise<GPUAdapterLike | null> };
  };
  // Dawn's Node binding chains these to the adapter request as a DawnTogglesDescriptor.
  const flags = toggles.length ? [`enable-dawn-features=${toggles.join(',')}`] : [];
  const adapter = await create(flags).requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) return undefined;
  const i = adapter.info;
  const l = adapter.limits;
  return {
    vendor: i.vendor,
    architecture: i.architecture,
    device: i.device,
    description: i.description,
    fallback: Boolean(i.isFallbackAdapter),
    shaderF16: adapter.features.has('shader-f16'),
    limits: {
      maxBufferSize: l.maxBufferSize,
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
    },
  };
}

/** The adapter, or FAILED_PRECONDITION saying what to install. */
export async function requireAdapter(): Promise<AdapterInfo> {
  const found = await findAdapter();
  if (!found)
    throw DuelError.failedPrecondition(
      `${NO_ADAPTER_HELP}; Vulkan drivers here: ${vulkanDrivers().join(', ') || 'none'}`,
    );
  return found;
}

/** The part of Dawn's GPUAdapter this module reads. */
interface GPUAdapterLike {
  info: {
    vendor: string;
    architecture: string;
    device: string;
    description: string;
    isFallbackAdapter?: boolean;
  };
  features: { has(name: string): boolean };
  limits: Record<
    | 'maxBufferSize'
    | 'maxStorageBufferBindingSize'
    | 'maxComputeWorkgroupStorageSize'
    | 'maxComputeInvocationsPerWorkgroup',
    number
  >;
}
