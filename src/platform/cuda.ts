/**
 * The CUDA execution provider, opt in. The default onnxruntime-node (1.30) lists `cuda` but ships
 * no provider library, and a provider loads only into the ONNX Runtime core of its own version, so
 * `bash scripts/setup.sh --cuda` (scripts/cuda.sh) installs ONNX Runtime 1.29.0's Node binding with
 * Microsoft's CUDA 13 provider from the npm registry into .cache/ort-cuda, beside the default one.
 * Runtimes on the cuda provider load that core (DUEL_ONNXRUNTIME_NODE, set here when unset); what
 * the provider library needs and this machine lacks is read with `ldd`, which names every missing
 * library at once where loading stops at the first.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from './paths.js';

export const CUDA_INSTALL_HELP =
  "bash scripts/setup.sh --cuda installs ONNX Runtime 1.29's CUDA 13 provider from the npm registry";

/** The onnxruntime-node directory scripts/cuda.sh installed, when it did. */
export function installedCudaCore(): string | undefined {
  const dir = join(packageRoot(), '.cache', 'ort-cuda', 'node_modules', 'onnxruntime-node');
  return existsSync(join(providerDir(dir), 'libonnxruntime_providers_cuda.so')) ? dir : undefined;
}

const providerDir = (core: string) => join(core, 'bin', 'napi-v6', 'linux', 'x64');

/** Points the cuda provider's Runtimes at the installed core, unless DUEL_ONNXRUNTIME_NODE says otherwise. */
export function useInstalledCudaCore(): void {
  if (process.env.DUEL_ONNXRUNTIME_NODE) return;
  const core = installedCudaCore();
  if (core) process.env.DUEL_ONNXRUNTIME_NODE = core;
}

export interface CudaLibraries {
  /** The onnxruntime-node directory cuda Runtimes load, and its version. */
  core?: string;
  version?: string;
  /** Shared libraries the provider needs that the dynamic loader does not find here. */
  missing: string[];
  /** Why the provider cannot load, when that is known without trying. */
  error?: string;
}

/** What the cuda provider's core and library need and find on this machine. */
export function cudaLibraries(): CudaLibraries {
  const core = process.env.DUEL_ONNXRUNTIME_NODE || installedCudaCore();
  if (!core) return { missing: [], error: `no CUDA provider installed: ${CUDA_INSTALL_HELP}` };
  const version = (JSON.parse(readFileSync(join(core, 'package.json'), 'utf8')) as { version: string })
    .version;
  const library = join(providerDir(core), 'libonnxruntime_providers_cuda.so');
  if (!existsSync(library))
    return { core, version, missing: [], error: `${library} not found: ${CUDA_INSTALL_HELP}` };
  const ldd = execFileSync('ldd', [library], { encoding: 'utf8' });
  const missing = [...ldd.matchAll(/^\s*(\S+) => not found/gm)].map((m) => m[1]!);
  return {
    core,
    version,
    missing,
    ...(missing.length
      ? {
          error: `the CUDA provider needs ${missing.join(', ')}: CUDA 13's libraries (the nvidia-cublas, nvidia-cuda-runtime and nvidia-curand wheels, or the CUDA toolkit) on LD_LIBRARY_PATH and the NVIDIA driver's libcuda.so.1`,
        }
      : {}),
  };
}
