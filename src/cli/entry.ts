/** How every entry of the `duel` command ends: a DuelError prints its message (and fields) and exits 2. */
import { CommanderError } from 'commander';
import { DuelError } from '../errors.js';
import { useInstalledCudaCore } from '../platform/cuda.js';

export async function runEntry(run: () => Promise<unknown>): Promise<void> {
  // Runtimes on the cuda provider load the core scripts/cuda.sh installed, where it did.
  useInstalledCudaCore();
  try {
    await run();
  } catch (error) {
    if (error instanceof CommanderError) process.exit(error.exitCode);
    const e = DuelError.from(error);
    process.stderr.write(`duel: ${e.message}\n`);
    if (process.env.DUEL_DEBUG && e.cause)
      process.stderr.write(`${String((e.cause as Error).stack ?? e.cause)}\n`);
    process.exit(2);
  }
}
