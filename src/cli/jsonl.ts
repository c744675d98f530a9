/** JSON Lines out on stdout (reading lives in the platform, where services use it too). */
export { readJsonl } from '../platform/jsonl.js';

export function writeJsonl(record: unknown): void {
  process.stdout.write(`${JSON.stringify(record)}\n`);
}
