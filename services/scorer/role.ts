/** `duel serve scorer`: the PreferenceScorerService, with the judges it is configured to preload. */
import { modelServingRole } from '../../src/platform/model-serving.js';
import type { RoleContext } from '../../src/platform/role.js';
import { type ModelServingConfig, modelServingConfig } from '../../src/platform/service-config.js';
import { ScorerCore, scorerService } from './service.js';

export const config = modelServingConfig;

export async function start(ctx: RoleContext<ModelServingConfig>) {
  return modelServingRole(ctx, (resolve, admission) => {
    const core = new ScorerCore(ctx.runtime(), undefined, ctx.metrics, admission, resolve);
    return { registration: scorerService(core), load: (ref) => core.load(ref) };
  });
}
