/**
 * DuelError ↔ gRPC status, the one place duel's errors meet gRPC: codes map one to one (gRPC's
 * status codes are google.rpc.Code, as duel's are), and field violations travel in the standard
 * rich error model, a google.rpc.BadRequest inside google.rpc.Status in the
 * `grpc-status-details-bin` trailer.
 */
import { Metadata, type ServiceError, type StatusObject, type status } from '@grpc/grpc-js';
import { Code, type DuelError, type FieldViolation } from '../../errors.js';
import type { Any } from '../../gen/google/protobuf/any.js';
import { BadRequest, Status } from '../../gen/third_party/google/rpc/status.js';

const DETAILS_KEY = 'grpc-status-details-bin';
const BAD_REQUEST_URL = 'type.googleapis.com/google.rpc.BadRequest';

/** duel's code as a gRPC status. */
function grpcStatusOf(code: Code): status {
  return code as number as status;
}

/** A gRPC status as duel's code; a number outside the canonical set is UNKNOWN. */
export function codeOfStatus(s: number): Code {
  return (Object.values(Code) as number[]).includes(s) ? (s as Code) : Code.UNKNOWN;
}

export function toStatus(error: DuelError): Partial<StatusObject> {
  const metadata = new Metadata();
  if (error.violations.length > 0) {
    const badRequest = BadRequest.encode({ fieldViolations: [...error.violations] }).finish();
    const status = Status.encode({
      code: grpcStatusOf(error.code),
      message: error.message,
      details: [{ typeUrl: BAD_REQUEST_URL, value: Buffer.from(badRequest) }],
    }).finish();
    metadata.set(DETAILS_KEY, Buffer.from(status));
  }
  return { code: grpcStatusOf(error.code), details: error.message, metadata };
}

/** The field violations a server attached to an error, or [] if none. */
export function violationsOf(error: Pick<ServiceError, 'metadata'>): FieldViolation[] {
  const raw = error.metadata?.get(DETAILS_KEY)[0];
  if (!(raw instanceof Buffer)) return [];
  const status = Status.decode(raw);
  return status.details
    .filter((d: Any) => d.typeUrl === BAD_REQUEST_URL)
    .flatMap((d: Any) => BadRequest.decode(d.value).fieldViolations);
}
