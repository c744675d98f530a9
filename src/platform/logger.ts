/**
 * Structured JSON logs (pino). Every service logs through a child of one root logger, with
 * fields (service, run, round, rpc) rather than formatted strings, so logs can be queried. A line
 * written inside a span carries its `trace_id` and `span_id` (tracing.ts).
 */
import { type Logger, type LoggerOptions, pino } from 'pino';
import { traceFields } from './tracing.js';

export type { Logger };

/** Keys whose values are never written, wherever they appear in a logged object. */
const REDACT = [
  'password',
  'token',
  'secret',
  'authorization',
  '*.password',
  '*.token',
  '*.secret',
  '*.authorization',
  '*.*.password',
  '*.*.token',
  '*.*.secret',
];

export interface LoggerConfig {
  /** @default 'info' */
  level?: string;
  /** Where lines go; @default stderr, so stdout stays free for a command's JSONL output. */
  destination?: NodeJS.WritableStream;
}

export function createLogger(name: string, config: LoggerConfig = {}): Logger {
  const options: LoggerOptions = {
    name,
    level: config.level ?? 'info',
    redact: { paths: REDACT, censor: '[redacted]' },
    base: { service: name },
    mixin: traceFields,
  };
  return pino(options, config.destination ?? pino.destination(2));
}
