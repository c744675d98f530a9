/** The testbed at toy sizes (seconds, not minutes) and the `duel` bin run as a child process, for the CLI tests. */
import { spawn } from 'node:child_process';
import { duelBin } from '../../src/platform/paths.js';

const BIN = duelBin();

export const TOY = [
  'data.sft_examples=256',
  'data.sft_epochs=1',
  'data.judge_pairs=128',
  'data.judge_epochs=1',
  'model.hidden_size=16',
  'model.layers=1',
  'judge.hidden_size=16',
  'judge.layers=1',
  'run.prompts=32',
  'run.prompts_per_round=16',
  'run.eval_prompts=8',
  'run.eval_samples=4',
].flatMap((s) => ['--set', s]);

/** Runs `duel <args>` with nats-server findable (Debian puts it in /usr/sbin). */
export function duel(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [BIN, ...args], {
      env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin` },
    });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    c.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}
