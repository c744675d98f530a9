/**
 * The shape the two model-serving roles (sampler, scorer) share: models load by reference from
 * either artifact store, expensive calls pass an admission limit (its depth on /metrics), and the
 * `models.preload` entries load and verify before the service reports SERVING.
 */
import type { ModelRef } from '../gen/duel/v1/common.js';
import { Admission } from './admission.js';
import { ArtifactResolver } from './artifact-resolver.js';
import type { ResolveArtifact } from './artifacts.js';
import type { ServiceRegistration } from './grpc/server.js';
import type { Role, RoleContext } from './role.js';
import type { ModelServingConfig } from './service-config.js';

export function modelServingRole(
  { cfg, runtime, log, metrics }: RoleContext<ModelServingConfig>,
  make: (
    resolve: ResolveArtifact,
    admission: Admission,
  ) => { registration: ServiceRegistration; load: (ref: ModelRef) => Promise<unknown> },
): Role {
  const artifacts = new ArtifactResolver(cfg.artifacts, cfg.nats);
  const admission = new Admission(cfg.admission.maxActive || runtime().workers, cfg.admission.maxQueued);
  metrics.sampled('duel_admission_active', 'expensive calls running now', () => admission.load.active);
  metrics.sampled(
    'duel_admission_queued',
    'expensive calls waiting for a slot now',
    () => admission.load.queued,
  );
  const { registration, load } = make((r) => artifacts.dir(r), admission);
  return {
    registration,
    async preload() {
      for (const entry of cfg.models.preload) {
        const [uri, sha256] = entry.split('#') as [string, string];
        await load({ artifact: { uri, sha256 }, adapter: undefined, name: 'preload' });
        log.info({ uri }, 'preloaded');
      }
    },
    close: () => artifacts.close(),
  };
}
