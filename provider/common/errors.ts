/**
 * Domain errors. Every error GCI raises on purpose is a GciError with a stable code; one
 * function (provider/common/rpc/status.ts) maps the codes to gRPC status codes. Messages say what
 * happened, name the bad value, and say how to fix it.
 */

/** Stable error codes; each maps to one gRPC status code. */
export type ErrorCode =
  | "INVALID_ARGUMENT"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "FAILED_PRECONDITION"
  | "RESOURCE_EXHAUSTED"
  | "UNAUTHENTICATED"
  | "PERMISSION_DENIED"
  | "UNAVAILABLE"
  | "DEADLINE_EXCEEDED"
  | "DATA_LOSS"
  | "INTERNAL";

const BRAND = Symbol.for("gci:GciError");

/** An error GCI raised on purpose, with a code and a message that names the fix. */
export class GciError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = "GciError";
    this.code = code;
    // The brand marks instances across two loaded copies of this module.
    Object.defineProperty(this, BRAND, { value: true });
  }

  /** True for any GciError, also one created by another copy of this module. */
  static isInstance(e: unknown): e is GciError {
    return typeof e === "object" && e !== null && (e as Record<symbol, unknown>)[BRAND] === true;
  }
}

/** Shorthands, so call sites read as the rule they enforce. */
export const invalid = (message: string): GciError => new GciError("INVALID_ARGUMENT", message);
export const notFound = (message: string): GciError => new GciError("NOT_FOUND", message);
export const precondition = (message: string): GciError => new GciError("FAILED_PRECONDITION", message);
export const exhausted = (message: string): GciError => new GciError("RESOURCE_EXHAUSTED", message);
export const dataLoss = (message: string): GciError => new GciError("DATA_LOSS", message);
export const unavailable = (message: string): GciError => new GciError("UNAVAILABLE", message);
