/**
 * A client of the orchestrator's RunsService: submit a run and follow its events, with one human
 * line per event (the CLI and the demo print them).
 */
import type * as grpc from '@grpc/grpc-js';
import { DuelError } from '../errors.js';
import { EventKind, type RunEvent } from '../gen/duel/v1/events.js';
import { type Run, type RunSpec, RunsServiceClient } from '../gen/duel/v1/runs.js';
import { callUnary, isTransient } from '../platform/grpc/client.js';
import { codeOfStatus } from '../platform/grpc/status-details.js';
import { eventName, stateName } from '../platform/run-events.js';
import { channelCredentials, clientTlsFromEnv } from '../platform/tls.js';

export const DEADLINE = { deadlineMs: 30_000 };

/** A client of the orchestrator at `address`, with TLS from DUEL_TLS_CA/CERT/KEY when set. */
export function runsClient(
  address: string,
  creds = channelCredentials(clientTlsFromEnv()),
): RunsServiceClient {
  return new RunsServiceClient(address, creds);
}

const fmt = (x: number | undefined, digits = 3) => (x === undefined ? '–' : x.toFixed(digits));

/** One human line per event, with elapsed time and an ETA from the rounds done so far. */
export function describeEvent(e: RunEvent, rounds: number, startedAt: number): string {
  const m = e.metrics?.values ?? {};
  const stage = eventName(e.kind);
  const head = e.round > 0 ? `round ${e.round}/${rounds} ${stage.padEnd(9)}` : `run ${stage}`;
  const secs = (k: string) => (m[k] !== undefined ? ` (${m[k]!.toFixed(1)} s)` : '');
  switch (e.kind) {
    case EventKind.EVENT_KIND_ROUND_SAMPLED:
      return `${head} ${m.completions} completions of ${m.prompts} prompts, mean length ${fmt(m.mean_length, 1)}${secs('seconds')}`;
    case EventKind.EVENT_KIND_ROUND_SCORED:
      return `${head} ${m.pairs} ordered pairs judged${secs('seconds')}`;
    case EventKind.EVENT_KIND_ROUND_TRAINED:
      return `${head} loss ${fmt(m.loss_last, 4)}, ${m.steps} steps, KL(π‖π_ref) ${fmt(m.kl_to_ref)}${secs('train_seconds')}`;
    case EventKind.EVENT_KIND_ROUND_EVALUATED:
      return `${head} win rate vs π_ref ${fmt(m.win_rate_vs_ref)}, vs π_${e.round - 1} ${fmt(m.win_rate_vs_prev)}${secs('eval_seconds')}`;
    case EventKind.EVENT_KIND_ROUND_COMPLETED: {
      const elapsed = (Date.now() - startedAt) / 1000;
      const eta = (elapsed / e.round) * (rounds - e.round);
      return `${head} in ${fmt(m.round_seconds, 1)} s · elapsed ${elapsed.toFixed(0)} s · ETA ${eta.toFixed(0)} s`;
    }
    case EventKind.EVENT_KIND_RUN_FINISHED:
      return `${head}: ${e.checkpoint?.artifact?.uri ?? ''}`;
    default:
      return e.message ? `${head}: ${e.message}` : head;
  }
}

/**
 * Streams a run's events to `onEvent` until its terminal event; resolves to the final run. When
 * the orchestrator goes away (drain, restart) the watch is opened again from the start for up to
 * `resumeWithinMs`, and events already delivered are skipped: each reaches `onEvent` once.
 */
export async function followRun(
  client: RunsServiceClient,
  runId: string,
  fromStart: boolean,
  onEvent: (e: RunEvent) => void,
  resumeWithinMs = 120_000,
): Promise<Run> {
  const seen = new Set<string>();
  let lostAt: number | undefined;
  for (let replay = fromStart; ; replay = true) {
    try {
      await watchOnce(client, runId, replay, (e) => {
        lostAt = undefined;
        const key = `${e.round}/${e.kind}`;
        if (seen.has(key)) return;
        seen.add(key);
        onEvent(e);
      });
      break;
    } catch (e) {
      if (!isTransient(DuelError.from(e))) throw e;
      lostAt ??= Date.now();
      if (Date.now() - lostAt > resumeWithinMs) throw e;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  return (await callUnary(client, client.getRun, { runId }, DEADLINE, 'GetRun')).run!;
}

function watchOnce(
  client: RunsServiceClient,
  runId: string,
  fromStart: boolean,
  onEvent: (e: RunEvent) => void,
): Promise<void> {
  return new Promise<void>((resolvePromise, reject) => {
    const call = client.watchRun({ runId, fromStart });
    call.on('data', (m: { event?: RunEvent }) => m.event && onEvent(m.event));
    call.on('error', (e: grpc.ServiceError) =>
      reject(new DuelError(codeOfStatus(e.code), `WatchRun: ${e.details}`)),
    );
    call.on('end', () => resolvePromise());
  });
}

export function runSummary(run: Run): Record<string, unknown> {
  return {
    run_id: run.runId,
    state: stateName(run.state),
    algorithm: run.spec?.algorithm,
    round: run.currentRound,
    rounds: run.spec?.rounds,
    // The orchestrator replica that holds its lease: the one driving it, or the last one that did.
    driver: run.lease?.holder || undefined,
    // The live run page on the orchestrator that answered (absent when it serves no HTTP port).
    page: run.pageUrl || undefined,
    max_staleness: run.spec?.maxStaleness || undefined,
    message: run.message || undefined,
    latest_checkpoint: run.latestCheckpoint?.artifact,
    per_round: run.rounds.map((r) => ({
      round: r.round,
      checkpoint: r.checkpoint?.artifact?.uri,
      ...r.metrics?.values,
    })),
  };
}

/** Submits `spec`, follows it to the end (unless `detach`) and returns the run. */
export async function submitRun(
  address: string,
  spec: RunSpec,
  o: {
    id?: string | undefined;
    detach?: boolean | undefined;
    log?: (line: string) => void;
    /** Default: TLS from DUEL_TLS_* when set, else plaintext. */
    credentials?: grpc.ChannelCredentials;
  },
): Promise<Run> {
  const client = runsClient(address, o.credentials);
  try {
    const created = (
      await callUnary(client, client.createRun, { spec, runId: o.id ?? '' }, DEADLINE, 'CreateRun')
    ).run!;
    const log = o.log ?? ((l: string) => process.stderr.write(`${l}\n`));
    log(
      `run ${created.runId}: ${spec.algorithm}, ${spec.rounds} rounds${created.pageUrl ? ` · live page ${created.pageUrl}` : ''}`,
    );
    if (o.detach) return created;
    const t0 = Date.now();
    return await followRun(client, created.runId, true, (e) => log(describeEvent(e, spec.rounds, t0)));
  } finally {
    client.close();
  }
}
