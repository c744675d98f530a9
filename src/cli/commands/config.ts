/** `duel config`: each service setting, the variable that sets it, and its resolved value. */
import type { Command } from 'commander';
import { describeConfig, loadConfig } from '../../platform/config.js';
import { serviceConfigSchema } from '../../platform/service-config.js';

export function registerConfig(program: Command): void {
  program
    .command('config')
    .description('show the service settings: key, environment variable, resolved value')
    .option('--config <file>', 'a YAML or JSON config file to resolve')
    .action((opts: { config?: string }) => {
      const resolved = loadConfig(serviceConfigSchema, { file: opts.config });
      for (const { key, env } of describeConfig(serviceConfigSchema)) {
        const value = key.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], resolved);
        process.stdout.write(`${key.padEnd(24)} ${env.padEnd(30)} ${JSON.stringify(value)}\n`);
      }
    });
}
