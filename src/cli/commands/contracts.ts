/** `duel contracts`: every gRPC service and method duel serves, from the generated definitions. */
import type { ServiceDefinition } from '@grpc/grpc-js';
import type { Command } from 'commander';
import { RunsServiceService } from '../../gen/duel/v1/runs.js';
import { PolicySamplerServiceService } from '../../gen/duel/v1/sampler.js';
import { PreferenceScorerServiceService } from '../../gen/duel/v1/scorer.js';
import { TrainerServiceService } from '../../gen/duel/v1/trainer.js';
import { TrainingServiceService } from '../../gen/duel/v1/training.js';

const SERVICES: ServiceDefinition[] = [
  PolicySamplerServiceService,
  PreferenceScorerServiceService,
  TrainerServiceService,
  TrainingServiceService,
  RunsServiceService,
];

function describeMethods(): string[] {
  return SERVICES.flatMap((svc) =>
    Object.values(svc).map((m) => {
      const shape = `${m.requestStream ? 'stream ' : ''}→ ${m.responseStream ? 'stream' : 'unary'}`;
      return `${m.path}  (${shape})`;
    }),
  );
}

export function registerContracts(program: Command): void {
  program
    .command('contracts')
    .description('list the gRPC methods of every duel service (contracts in proto/duel/v1)')
    .action(() => {
      for (const line of describeMethods()) process.stdout.write(`${line}\n`);
    });
}
