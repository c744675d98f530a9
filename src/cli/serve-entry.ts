/**
 * The entry of dist/bin/serve.cjs, the CommonJS bundle of `duel serve` alone that
 * src/cli/serve-launcher.ts runs from V8's code cache (scripts/bundle.mjs builds both).
 */
import { Command } from 'commander';
import { setEsmImporter } from '../esm-import.js';
import { packageVersion } from '../platform/paths.js';
import { registerServe, roleModule } from './commands/serve.js';
import { runEntry } from './entry.js';

/** `duel serve ARGS…`; `importer` is the launcher's own import() (src/esm-import.ts). */
export function main(args: string[], importer: (specifier: string) => Promise<unknown>): Promise<void> {
  setEsmImporter(importer);
  const program = new Command('duel').version(packageVersion(), '-V, --version').showHelpAfterError();
  registerServe(program);
  return runEntry(() => program.parseAsync(['node', 'duel', 'serve', ...args]));
}

/** Evaluates what `duel serve ROLE` loads, serving nothing: the code a cache written after it holds. */
export async function warm(role: string): Promise<void> {
  await roleModule(role);
}
