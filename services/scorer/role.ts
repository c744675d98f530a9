/** `duel serve scorer`: the PreferenceScorerService, with the judges it is configured to preload. */
import { modelServingRole } from '../../src/platform/model-serving.js';
import type { RoleContext } from '../../src/platform/role.js';
import { type ScorerConfig, scorerConfig } from '../../src/platform/service-config.js';
import { importJudgeTypes } from './judge-modules.js';
import { ScorerCore, scorerService } from './service.js';

export const config = scorerConfig;

export async function start(ctx: RoleContext<ScorerConfig>) {
  const judgeTypes = await importJudgeTypes(ctx.cfg.judges.modules);
  return modelServingRole(ctx, (resolve, admission) => {
    const core = new ScorerCore(ctx.runtime(), undefined, ctx.metrics, admission, resolve, judgeTypes);
    return { registration: scorerService(core), load: (ref) => core.load(ref) };
  });
}
