/**
 * One error type for all of duel. A DuelError carries a gRPC status code, so wherever it is
 * thrown (a loader, an algorithm's config check, a handler) the service layer answers with a
 * deliberate status instead of UNKNOWN, and the CLI prints its message and exits non-zero.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';

export { GrpcStatus as Code };

/** A request or config field that failed validation: a dotted path and the rule it broke. */
export interface FieldViolation {
  field: string;
  description: string;
}

export interface DuelErrorOptions {
  cause?: unknown;
  violations?: FieldViolation[];
}

export class DuelError extends Error {
  override readonly name = 'DuelError';
  readonly code: GrpcStatus;
  readonly violations: readonly FieldViolation[];

  constructor(code: GrpcStatus, message: string, options: DuelErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.violations = options.violations ?? [];
  }

  /** Bad input, naming each field and its problem. */
  static invalidArgument(violations: FieldViolation[], cause?: unknown): DuelError {
    const message = violations.map((v) => `${v.field}: ${v.description}`).join('; ');
    return new DuelError(GrpcStatus.INVALID_ARGUMENT, message, { violations, cause });
  }

  static notFound(message: string): DuelError {
    return new DuelError(GrpcStatus.NOT_FOUND, message);
  }

  static failedPrecondition(message: string): DuelError {
    return new DuelError(GrpcStatus.FAILED_PRECONDITION, message);
  }

  static resourceExhausted(message: string): DuelError {
    return new DuelError(GrpcStatus.RESOURCE_EXHAUSTED, message);
  }

  static unavailable(message: string, cause?: unknown): DuelError {
    return new DuelError(GrpcStatus.UNAVAILABLE, message, { cause });
  }

  static internal(message: string, cause?: unknown): DuelError {
    return new DuelError(GrpcStatus.INTERNAL, message, { cause });
  }

  /** Whatever was caught, as a DuelError: DuelErrors pass through, anything else is INTERNAL. */
  static from(error: unknown): DuelError {
    if (error instanceof DuelError) return error;
    if (error instanceof Error) return new DuelError(GrpcStatus.INTERNAL, error.message, { cause: error });
    return new DuelError(GrpcStatus.INTERNAL, String(error));
  }
}
