/**
 * A round's records kept as an artifact (one file, records.pb, a RoundRecords message), so the
 * stage after sampling or scoring can start from them after a restart. Names are siblings of the
 * round's checkpoint (`<prefix>/<run>/round-<n>.sampled`), never inside it. Stages are seeded, so a
 * stage repeated before its record was updated produces the same records: an artifact that already
 * exists under the name is the one to use.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuelError } from '../../src/errors.js';
import { type ArtifactRef, type RoundRecord, RoundRecords } from '../../src/gen/duel/v1/common.js';
import type { ArtifactStore, ResolveArtifact } from '../../src/platform/artifacts.js';

const FILE = 'records.pb';

export async function keepRecords(
  store: ArtifactStore,
  name: string,
  records: RoundRecord[],
): Promise<ArtifactRef> {
  const found = await store.find(name);
  if (found) return found.ref;
  const dir = mkdtempSync(join(tmpdir(), 'duel-records-'));
  try {
    writeFileSync(join(dir, FILE), RoundRecords.encode({ records }).finish());
    return await store.put(dir, name);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function readRecords(resolve: ResolveArtifact, ref: ArtifactRef): Promise<RoundRecord[]> {
  const dir = await resolve(ref);
  try {
    return RoundRecords.decode(readFileSync(join(dir, FILE))).records;
  } catch (e) {
    throw DuelError.failedPrecondition(`round records ${ref.uri} cannot be read: ${(e as Error).message}`);
  }
}
