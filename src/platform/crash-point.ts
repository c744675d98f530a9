/**
 * Named crash points for fault tests, in the manner of etcd's gofail: `DUEL_CRASH_AT=<name>` makes
 * the process SIGKILL itself when it reaches `crashPoint(<name>)`, so a test can kill a service at
 * one exact moment (between writing a record and acking its message, say) instead of hoping a
 * timed kill lands there. Unset, a crash point is one comparison.
 */
const armed = process.env.DUEL_CRASH_AT ?? '';

export function crashPoint(name: string): void {
  if (armed !== name) return;
  process.stderr.write(`crash point ${name}: SIGKILL\n`);
  process.kill(process.pid, 'SIGKILL');
}
