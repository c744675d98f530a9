/**
 * The live run pages on the orchestrator's HTTP port, beside /metrics: `/runs` lists the runs,
 * `/runs/<id>` is one run's report drawn from its record, and `/runs/<id>/events` streams newer
 * versions of that report as server-sent events. The stream replays the run's events from
 * JetStream and folds them (src/report/run-view.ts), so any replica serves any run's page, and a
 * browser that reconnects (EventSource does by itself) gets the whole run again.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { hostname } from 'node:os';
import { Code, DuelError } from '../../src/errors.js';
import type { Logger } from '../../src/platform/logger.js';
import { stateName } from '../../src/platform/run-events.js';
import { runPage, runReport, runsIndex } from '../../src/report/run-page.js';
import { foldEvent, viewOfRun } from '../../src/report/run-view.js';
import type { Orchestrator } from './driver.js';
import { isRunId } from './spec.js';

/** Replays come in bursts: one report per burst, at most this long after its last event. */
const COALESCE_MS = 100;
/** A comment line this often keeps proxies from closing a quiet stream (a long train stage). */
const HEARTBEAT_MS = 15_000;

export class RunPages {
  private base = '';
  private readonly streams = new Set<AbortController>();

  constructor(
    private readonly o: Orchestrator,
    private readonly log: Logger,
    /** orchestrator.pageUrl: where clients reach the pages ('' → this process's HTTP address). */
    private readonly configured: string,
  ) {}

  /** Learns where the HTTP port listens, once it does. */
  listening(host: string, port: number): void {
    const reachable = host === '0.0.0.0' || host === '::' ? hostname() : host;
    this.base = (this.configured || `http://${reachable}:${port}`).replace(/\/+$/, '');
  }

  /** The run's page address, or '' while no HTTP port serves the pages. */
  url(runId: string): string {
    return this.base ? `${this.base}/runs/${runId}` : '';
  }

  /** Answers the request when it is one of the pages'; false leaves it to the caller. */
  handle(req: IncomingMessage, res: ServerResponse): boolean {
    const path = new URL(req.url ?? '/', 'http://page').pathname;
    const m = /^\/runs(?:\/([^/]+)(\/events)?)?\/?$/.exec(path);
    if (!m) return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET' }).end();
      return true;
    }
    const [, id, events] = m;
    const work = !id ? this.index(res) : events ? this.stream(id, res) : this.page(id, res);
    work.catch((e: unknown) => this.fail(res, e));
    return true;
  }

  /** Ends every open stream (the orchestrator drains): browsers reconnect to another replica. */
  close(): void {
    for (const s of this.streams) s.abort();
  }

  private async index(res: ServerResponse): Promise<void> {
    html(res, runsIndex(await this.o.list()));
  }

  private async page(id: string, res: ServerResponse): Promise<void> {
    const run = await this.o.get(checked(id));
    html(res, runPage(viewOfRun(run), `${encodeURIComponent(id)}/events`));
  }

  private async stream(id: string, res: ServerResponse): Promise<void> {
    const view = viewOfRun(await this.o.get(checked(id)));
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      // nginx (an ingress) buffers responses unless told not to: events would arrive in lumps.
      'x-accel-buffering': 'no',
    });
    const stop = new AbortController();
    this.streams.add(stop);
    // The response's close, not the request's: a request's 'close' may come once its (empty)
    // body is read, while the response's comes when the browser goes away.
    res.once('close', () => stop.abort());
    let pending: NodeJS.Timeout | undefined;
    const send = () => {
      pending = undefined;
      res.write(sse('report', runReport(view)));
    };
    const heartbeat = setInterval(() => res.write(': still here\n\n'), HEARTBEAT_MS);
    try {
      // From the start: the record read above may lag its newest event (an event is published
      // before the record moves), and folding is idempotent per round.
      for await (const e of this.o.events.watch(id, true, stop.signal)) {
        foldEvent(view, e);
        pending ??= setTimeout(send, COALESCE_MS);
      }
      if (!stop.signal.aborted) {
        clearTimeout(pending);
        send();
        res.write(sse('end', stateName(view.state)));
      }
    } finally {
      clearTimeout(pending);
      clearInterval(heartbeat);
      this.streams.delete(stop);
      res.end();
    }
  }

  private fail(res: ServerResponse, e: unknown): void {
    const err = DuelError.from(e);
    const status = err.code === Code.NOT_FOUND ? 404 : err.code === Code.INVALID_ARGUMENT ? 400 : 500;
    if (status === 500) this.log.warn({ err: err.message }, 'run page failed');
    if (res.headersSent) res.end();
    else res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' }).end(`${err.message}\n`);
  }
}

function checked(id: string): string {
  if (!isRunId(id))
    throw DuelError.invalidArgument([{ field: 'run id', description: `'${id}' is not a run id` }]);
  return id;
}

function html(res: ServerResponse, body: string): void {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-cache' }).end(body);
}

/** One server-sent event; every line of `data` gets its own `data:` field, as the format requires. */
function sse(event: string, data: string): string {
  return `event: ${event}\n${data
    .split('\n')
    .map((l) => `data: ${l}`)
    .join('\n')}\n\n`;
}
