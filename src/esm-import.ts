/**
 * import() of a package that is an ES module only (Dawn's `webgpu`), or of a module by path (a
 * scorer's judge modules). Run from the code-cached
 * CommonJS bundle of `duel serve` (src/cli/serve-launcher.ts), the bundle's own import() becomes a
 * require(), which cannot load an ES module on Node 20; the launcher lends its real import() here.
 */
let importer: (specifier: string) => Promise<unknown> = (specifier) => import(specifier);

export function setEsmImporter(f: (specifier: string) => Promise<unknown>): void {
  importer = f;
}

export const importEsm = (specifier: string): Promise<unknown> => importer(specifier);
