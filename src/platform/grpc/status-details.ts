/**
 * DuelError ↔ gRPC status, using the standard rich error model: field violations travel as a
 * google.rpc.BadRequest inside google.rpc.Status in the `grpc-status-details-bin` trailer.
 */
import { Metadata, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import type { Any } from '../../gen/google/protobuf/any.js';
import { BadRequest, Status } from '../../gen/third_party/google/rpc/status.js';
import type { DuelError, FieldViolation } from '../errors.js';

const DETAILS_KEY = 'grpc-status-details-bin';
const BAD_REQUEST_URL = 'type.googleapis.com/google.rpc.BadRequest';

export function toStatus(error: DuelError): Partial<StatusObject> {
  const metadata = new Metadata();
  if (error.violations.length > 0) {
    const badRequest = BadRequest.encode({ fieldViolations: [...error.violations] }).finish();
    const status = Status.encode({
      code: error.code,
      message: error.message,
      details: [{ typeUrl: BAD_REQUEST_URL, value: Buffer.from(badRequest) }],
    }).finish();
    metadata.set(DETAILS_KEY, Buffer.from(status));
  }
  return { code: error.code, details: error.message, metadata };
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
