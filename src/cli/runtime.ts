/**
 * The runtime the command-line tools compute on. Its execution provider is DUEL_RUNTIME_PROVIDER,
 * the variable that also sets a service's `runtime.provider` (docs/DEPLOY.md), so one setting
 * moves `duel train`, `duel sample`, the benchmarks and `duel serve` to the GPU together.
 */

import { PROVIDERS, type Provider } from '../engine/runtime/protocol.js';
import { Runtime, type RuntimeOptions } from '../engine/runtime/runtime.js';
import { DuelError } from '../errors.js';

/** `name` as a provider, refused naming `field` when it is none. */
export function parseProvider(name: string, field: string): Provider {
  if (!(PROVIDERS as readonly string[]).includes(name))
    throw DuelError.invalidArgument([
      { field, description: `must be one of ${PROVIDERS.join(', ')}, got '${name}'` },
    ]);
  return name as Provider;
}

/** The provider the environment asks for: DUEL_RUNTIME_PROVIDER, else cpu. */
export function envProvider(): Provider {
  const raw = process.env.DUEL_RUNTIME_PROVIDER;
  return raw ? parseProvider(raw, 'DUEL_RUNTIME_PROVIDER') : 'cpu';
}

/** A runtime on `provider`, or on the environment's. */
export function cliRuntime(options: RuntimeOptions = {}): Runtime {
  return new Runtime({ ...options, provider: options.provider ?? envProvider() });
}
