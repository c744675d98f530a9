/**
 * The scorer's judge types from modules (`judges.modules`, src/models/judge/judge-type.ts): each
 * path imported once at start, its `judgeTypes` collected by model_type. A module that cannot be
 * imported or exports no judge types stops the start with the setting named.
 */
import { pathToFileURL } from 'node:url';
import { DuelError } from '../../src/errors.js';
import { importEsm } from '../../src/esm-import.js';
import type { JudgeModule, JudgeType } from '../../src/models/judge/judge-type.js';

export async function importJudgeTypes(paths: readonly string[]): Promise<Map<string, JudgeType>> {
  const types = new Map<string, JudgeType>();
  for (const [i, path] of paths.entries()) {
    const field = `judges.modules[${i}]`;
    let mod: Partial<JudgeModule>;
    try {
      // importEsm: the code-cached CommonJS bundle of `duel serve` would turn import() into require().
      mod = (await importEsm(pathToFileURL(path).href)) as Partial<JudgeModule>;
    } catch (e) {
      throw DuelError.invalidArgument([
        { field, description: `cannot import ${path}: ${(e as Error).message}` },
      ]);
    }
    if (!Array.isArray(mod.judgeTypes) || mod.judgeTypes.length === 0)
      throw DuelError.invalidArgument([{ field, description: `${path} exports no judgeTypes` }]);
    for (const t of mod.judgeTypes) types.set(t.modelType, t);
  }
  return types;
}
