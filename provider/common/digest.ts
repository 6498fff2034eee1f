/**
 * Digest shapes and hashing helpers shared by the format and the store.
 * @internal
 */

import { createHash } from "crypto";
import { invalid } from "./errors";

/** An image digest: the sha256 of the whole archive, as "sha256:<64 hex>". */
export const DIGEST_PATTERN = /^sha256:[0-9a-f]{64}$/;
/** A chunk's name: the bare sha256 hex of its bytes. */
export const SHA256_HEX_PATTERN = /^[0-9a-f]{64}$/;

/** Quotes a value for an error message; long strings are cut so a hostile name cannot flood a log. */
export function show(value: unknown, max = 200): string {
  const text = typeof value === "string" ? value : String(value);
  const cut = text.length > max ? `${text.slice(0, max)}…(${text.length} chars)` : text;
  return typeof value === "string" ? JSON.stringify(cut) : cut;
}

/** Checks an image digest given as input and returns its hex part. */
export function checkDigest(value: unknown, what = "image digest"): string {
  if (typeof value !== "string" || !DIGEST_PATTERN.test(value)) {
    throw invalid(
      `${what} ${show(value)} is not valid: expected "sha256:" followed by 64 lowercase hex digits ` +
        `(the sha256 of the whole image archive, as packDirectory or 'gci image ls' prints it).`,
    );
  }
  return value.slice("sha256:".length);
}

/** Checks a chunk name given as input: 64 lowercase hex digits, no "sha256:" prefix. */
export function checkChunkSha(value: unknown, what = "chunk sha256"): string {
  if (typeof value !== "string" || !SHA256_HEX_PATTERN.test(value)) {
    throw invalid(
      `${what} ${show(value)} is not valid: expected 64 lowercase hex digits ` +
        `(the sha256 of the chunk's bytes, without a "sha256:" prefix).`,
    );
  }
  return value;
}

/** sha256 hex of a buffer. */
export function sha256Hex(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Counts and hashes every byte that passes, so the whole-archive digest needs no second read. */
export class Meter {
  private readonly hash = createHash("sha256");
  bytes = 0;

  update(data: Uint8Array): void {
    this.hash.update(data);
    this.bytes += data.byteLength;
  }

  /** "sha256:<hex>" of everything seen; call once, at the end. */
  digest(): string {
    return `sha256:${this.hash.digest("hex")}`;
  }
}
