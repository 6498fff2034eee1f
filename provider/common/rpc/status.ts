import * as grpc from "@grpc/grpc-js";
import { ErrorCode, GciError } from "../errors";

const TO_STATUS: Record<ErrorCode, grpc.status> = {
  INVALID_ARGUMENT: grpc.status.INVALID_ARGUMENT,
  NOT_FOUND: grpc.status.NOT_FOUND,
  ALREADY_EXISTS: grpc.status.ALREADY_EXISTS,
  FAILED_PRECONDITION: grpc.status.FAILED_PRECONDITION,
  RESOURCE_EXHAUSTED: grpc.status.RESOURCE_EXHAUSTED,
  UNAUTHENTICATED: grpc.status.UNAUTHENTICATED,
  PERMISSION_DENIED: grpc.status.PERMISSION_DENIED,
  UNAVAILABLE: grpc.status.UNAVAILABLE,
  DEADLINE_EXCEEDED: grpc.status.DEADLINE_EXCEEDED,
  DATA_LOSS: grpc.status.DATA_LOSS,
  INTERNAL: grpc.status.INTERNAL,
};

/** The one place where GCI's error codes become gRPC status codes. */
export function toStatus(e: unknown): Partial<grpc.StatusObject> {
  if (GciError.isInstance(e)) return { code: TO_STATUS[e.code], details: e.message };
  if (isServiceError(e)) return { code: e.code, details: e.details };
  const message = e instanceof Error ? e.message : String(e);
  return { code: grpc.status.INTERNAL, details: `internal error: ${message}` };
}

/** Turns an error from a gRPC call back into a GciError with the same code and message. */
export function fromStatus(e: unknown): GciError {
  if (GciError.isInstance(e)) return e;
  if (isServiceError(e)) {
    const name = grpc.status[e.code] as string;
    const code = (name in TO_STATUS ? name : "INTERNAL") as ErrorCode;
    return new GciError(code, e.details || e.message);
  }
  return new GciError("INTERNAL", e instanceof Error ? e.message : String(e));
}

/** The gRPC status code name of an error, e.g. "NOT_FOUND". */
export function statusName(e: unknown): string {
  return grpc.status[toStatus(e).code ?? grpc.status.INTERNAL] as string;
}

function isServiceError(e: unknown): e is grpc.ServiceError {
  return (
    typeof e === "object" && e !== null && typeof (e as grpc.ServiceError).code === "number" && "details" in e
  );
}

/**
 * Wraps a unary handler so it always answers with a status instead of throwing: a handler
 * never crashes the daemon.
 */
export function unary<Req, Res>(
  fn: (req: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    fn(call.request, call).then(
      (res) => callback(null, res),
      (e) => callback(toStatus(e) as grpc.ServiceError),
    );
  };
}
