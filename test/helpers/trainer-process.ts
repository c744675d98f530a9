/** `duel serve trainer` as a child process of a test, its log kept for the test to read. */
import { type ChildProcessByStdio, spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { duelBin } from '../../src/platform/paths.js';

export type TrainerProcess = ChildProcessByStdio<null, null, Readable> & { log: string; address: string };

/** Starts the built trainer on `port` with `env` over the test's own; resolves once it listens. */
export async function startTrainerProcess(port: number, env: NodeJS.ProcessEnv): Promise<TrainerProcess> {
  const child = spawn(process.execPath, [duelBin(), 'serve', 'trainer', '--port', String(port)], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, DUEL_RUNTIME_WORKERS: '1', DUEL_LOG_LEVEL: 'info', ...env },
  }) as TrainerProcess;
  child.log = '';
  child.address = `127.0.0.1:${port}`;
  await new Promise<void>((resolve, reject) => {
    child.stderr.on('data', (d: Buffer) => {
      child.log += d.toString();
      if (/listening on/.test(child.log)) resolve();
    });
    child.once('exit', (code) => reject(new Error(`trainer exited ${code}: ${child.log}`)));
  });
  return child;
}
