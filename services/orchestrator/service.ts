/**
 * RunsService: the gRPC face of the orchestrator (driver.ts does the work). WatchRun replays a
 * run's events from JetStream, so a watcher sees the same sequence any NATS consumer sees; a
 * watch ends with UNAVAILABLE when this orchestrator drains, and the client resumes elsewhere.
 */

import { DuelError } from '../../src/errors.js';
import { type Run, RunState, RunsServiceService, type WatchRunResponse } from '../../src/gen/duel/v1/runs.js';
import { service } from '../../src/platform/grpc/server.js';
import { isTerminal } from '../../src/platform/run-events.js';
import type { Orchestrator } from './driver.js';
import type { RunPages } from './run-pages.js';
import { checkRunId } from './spec.js';

const MAX_PAGE = 500;

export function runsService(o: Orchestrator, pages: RunPages) {
  // Each answer names the run's live page on this orchestrator; the record never stores it.
  const withPage = (run: Run): Run => ({ ...run, pageUrl: pages.url(run.runId) });
  return service(RunsServiceService, {
    async createRun(req) {
      return { run: withPage((await o.create(req.spec, req.runId)).run) };
    },

    async getRun(req) {
      return { run: withPage(await o.get(req.runId)) };
    },

    async listRuns(req) {
      if (req.pageSize > MAX_PAGE)
        throw DuelError.invalidArgument([{ field: 'page_size', description: `must be at most ${MAX_PAGE}` }]);
      const size = req.pageSize || 50;
      const runs = (await o.list()).filter((r) => req.pageToken === '' || r.runId > req.pageToken);
      const page = runs.slice(0, size);
      return {
        runs: page.map(withPage),
        nextPageToken: runs.length > size ? page[page.length - 1]!.runId : '',
      };
    },

    async *watchRun(req, ctx): AsyncIterable<WatchRunResponse> {
      checkRunId(req.runId);
      const run = await o.get(req.runId);
      const ended = [RunState.RUN_STATE_SUCCEEDED, RunState.RUN_STATE_FAILED, RunState.RUN_STATE_CANCELLED];
      if (!req.fromStart && ended.includes(run.state)) return;
      const stop = AbortSignal.any([ctx.signal, ctx.draining]);
      for await (const event of o.events.watch(req.runId, req.fromStart, stop)) {
        yield { event };
        if (isTerminal(event.kind)) return;
      }
      // The watch ended without the run's end: this server is draining. UNAVAILABLE tells the
      // client to watch again (from the start, skipping what it saw) on a live orchestrator.
      if (ctx.draining.aborted) throw DuelError.unavailable('the orchestrator is shutting down: watch again');
    },

    async cancelRun(req) {
      return { run: withPage(await o.cancel(req.runId, req.reason)) };
    },
  });
}
