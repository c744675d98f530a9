/**
 * One error type for all of duel, below every layer: a loader, an algorithm's config check, a
 * handler and the CLI all throw DuelError. Its code is one of the canonical error codes
 * (google.rpc.Code), which is what lets the gRPC layer (src/platform/grpc) answer with a deliberate
 * status instead of UNKNOWN, and the CLI print the message and exit non-zero; nothing here knows
 * about gRPC.
 */

/** The canonical error codes, numbered as google.rpc.Code numbers them. */
export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type Code = (typeof Code)[keyof typeof Code];

const NAMES = Object.fromEntries(Object.entries(Code).map(([name, n]) => [n, name])) as Record<Code, string>;

/** The code's name, e.g. INVALID_ARGUMENT. */
export const codeName = (code: Code): string => NAMES[code] ?? 'UNKNOWN';

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
  readonly code: Code;
  readonly violations: readonly FieldViolation[];

  constructor(code: Code, message: string, options: DuelErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.violations = options.violations ?? [];
  }

  /** Bad input, naming each field and its problem. */
  static invalidArgument(violations: FieldViolation[], cause?: unknown): DuelError {
    const message = violations.map((v) => `${v.field}: ${v.description}`).join('; ');
    return new DuelError(Code.INVALID_ARGUMENT, message, { violations, cause });
  }

  static notFound(message: string): DuelError {
    return new DuelError(Code.NOT_FOUND, message);
  }

  static failedPrecondition(message: string): DuelError {
    return new DuelError(Code.FAILED_PRECONDITION, message);
  }

  static resourceExhausted(message: string): DuelError {
    return new DuelError(Code.RESOURCE_EXHAUSTED, message);
  }

  static unavailable(message: string, cause?: unknown): DuelError {
    return new DuelError(Code.UNAVAILABLE, message, { cause });
  }

  static internal(message: string, cause?: unknown): DuelError {
    return new DuelError(Code.INTERNAL, message, { cause });
  }

  /** Whatever was caught, as a DuelError: DuelErrors pass through, anything else is INTERNAL. */
  static from(error: unknown): DuelError {
    if (error instanceof DuelError) return error;
    if (error instanceof Error) return new DuelError(Code.INTERNAL, error.message, { cause: error });
    return new DuelError(Code.INTERNAL, String(error));
  }
}
