/** `duel config [role]`: each setting of a role (or the shared ones), the variable that sets it, and its resolved value. */
import type { Command } from 'commander';
import { describeConfig, loadConfig } from '../../platform/config.js';
import { serviceConfigSchema } from '../../platform/service-config.js';
import { ROLES, roleModule } from './serve.js';

export function registerConfig(program: Command): void {
  program
    .command('config')
    .description('show the service settings: key, environment variable, resolved value')
    .argument('[role]', `a role's settings (${Object.keys(ROLES).join(', ')}); none: the shared ones`)
    .option('--config <file>', 'a YAML or JSON config file to resolve')
    .action(async (role: string | undefined, opts: { config?: string }) => {
      const schema = role === undefined ? serviceConfigSchema : (await roleModule(role)).config;
      const resolved = loadConfig(schema, { file: opts.config });
      for (const { key, env } of describeConfig(schema)) {
        const value = key.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], resolved);
        process.stdout.write(`${key.padEnd(34)} ${env.padEnd(46)} ${JSON.stringify(value)}\n`);
      }
    });
}
