/**
 * `duel artifacts put DIR NAME`: copies a model, judge or checkpoint directory into an artifact
 * store and prints its reference (URI and manifest digest) as JSON, the form a run spec takes.
 * On a cluster this is how models reach the `nats://` store the services read.
 */
import type { Command } from 'commander';
import { ArtifactResolver } from '../../platform/artifact-resolver.js';
import { loadConfig } from '../../platform/config.js';
import { serviceConfigSchema } from '../../platform/service-config.js';

export function registerArtifacts(program: Command): void {
  const artifacts = program.command('artifacts').description('the artifact stores (file:// and nats://)');
  artifacts
    .command('put')
    .description('copy DIR into the store as NAME and print {"uri", "sha256"}')
    .argument('<dir>', 'a model, judge or checkpoint directory')
    .argument('<name>', 'its name inside the store, e.g. models/ref')
    .option('--store <kind>', 'file or nats (default: artifacts.store, DUEL_ARTIFACTS_STORE)')
    .option('--nats <url>', 'NATS server URL (default: nats.url, DUEL_NATS_URL)')
    .option('--config <file>', 'a YAML or JSON config file')
    .action(async (dir: string, name: string, o: { store?: string; nats?: string; config?: string }) => {
      const overrides: Record<string, unknown> = {};
      if (o.store !== undefined) overrides.artifacts = { store: o.store };
      if (o.nats !== undefined) overrides.nats = { url: o.nats };
      const cfg = loadConfig(serviceConfigSchema, { file: o.config, overrides });
      const resolver = new ArtifactResolver(cfg.artifacts, cfg.nats);
      try {
        const ref = await (await resolver.publisher()).put(dir, name);
        process.stdout.write(`${JSON.stringify(ref)}\n`);
      } finally {
        await resolver.close();
      }
    });
}
