/**
 * The runtime the command-line tools compute on. Its execution provider is DUEL_RUNTIME_PROVIDER,
 * the variable that also sets a service's `runtime.provider` (docs/DEPLOY.md), so one setting
 * moves `duel train`, `duel sample`, the benchmarks and `duel serve` to the GPU together; its
 * compute dtype, likewise, DUEL_RUNTIME_DTYPE (a service's `runtime.dtype`) or `--dtype`.
 */

import { COMPUTE_DTYPES, type ComputeDtype, PROVIDERS, type Provider } from '../engine/runtime/protocol.js';
import { Runtime, type RuntimeOptions } from '../engine/runtime/runtime.js';
import { DuelError } from '../errors.js';

/** `name` as one of `choices`, refused naming `field` when it is none. */
function oneOf<T extends string>(choices: readonly T[], name: string, field: string): T {
  if (!(choices as readonly string[]).includes(name))
    throw DuelError.invalidArgument([
      { field, description: `must be one of ${choices.join(', ')}, got '${name}'` },
    ]);
  return name as T;
}

/** `name` as a provider, refused naming `field` when it is none. */
export const parseProvider = (name: string, field: string): Provider => oneOf(PROVIDERS, name, field);

/** `name` as a compute dtype, refused naming `field` when it is none. */
export const parseDtype = (name: string, field: string): ComputeDtype => oneOf(COMPUTE_DTYPES, name, field);

/** A command's `--dtype`: what `what` computes in, float32 or float16; absent, the environment's. */
export const dtypeOption = (what: string) =>
  [
    '--dtype <dtype>',
    `${what}: float32 or float16 (default: DUEL_RUNTIME_DTYPE, else float32)`,
    (raw: string) => parseDtype(raw, '--dtype'),
  ] as const;

/** The provider the environment asks for: DUEL_RUNTIME_PROVIDER, else cpu. */
export function envProvider(): Provider {
  const raw = process.env.DUEL_RUNTIME_PROVIDER;
  return raw ? parseProvider(raw, 'DUEL_RUNTIME_PROVIDER') : 'cpu';
}

/** The compute dtype the environment asks for: DUEL_RUNTIME_DTYPE, else float32. */
export function envDtype(): ComputeDtype {
  const raw = process.env.DUEL_RUNTIME_DTYPE;
  return raw ? parseDtype(raw, 'DUEL_RUNTIME_DTYPE') : 'float32';
}

/** A runtime on `provider` and in `dtype`, or on and in the environment's. */
export function cliRuntime(options: RuntimeOptions = {}): Runtime {
  return new Runtime({
    ...options,
    provider: options.provider ?? envProvider(),
    dtype: options.dtype ?? envDtype(),
  });
}
