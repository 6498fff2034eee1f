/** The rule for an image-copy claim (ImageRefRecord), shared by both catalog engines. */

import { invalid } from "../common/errors";
import type { ImageRefRecord } from "./types";
import { checkCount, checkDigest, checkName } from "./validate";

/** Longest holder accepted: a Pulumi URN with a long project, stack and resource name fits. */
const MAX_HOLDER_LENGTH = 1024;

/** A claim's holder: printable text, never a path or argument (the engines only store it). */
export function checkHolder(holder: unknown): string {
  if (
    typeof holder !== "string" ||
    holder.length === 0 ||
    holder.length > MAX_HOLDER_LENGTH ||
    /[\p{Cc}]/u.test(holder)
  ) {
    throw invalid(
      `image claim holder ${JSON.stringify(holder)} is not valid: expected 1 to ${MAX_HOLDER_LENGTH} printable ` +
        `characters, such as the claiming resource's URN`,
    );
  }
  return holder;
}

/** The claim with only its known fields, or INVALID_ARGUMENT naming the bad one. */
export function checkImageRef(ref: ImageRefRecord): ImageRefRecord {
  checkDigest(ref?.digest);
  checkName(`datacenter of the claim on ${ref.digest}`, ref.datacenter);
  checkHolder(ref.holder);
  checkCount(`createdAt of the claim on ${ref.digest}`, ref.createdAt);
  return { digest: ref.digest, datacenter: ref.datacenter, holder: ref.holder, createdAt: ref.createdAt };
}

/** The key of one claim: digest, datacenter and holder, as a release names it. */
export function checkImageRefKey(digest: string, datacenter: string, holder: string): void {
  checkDigest(digest);
  checkName("claim datacenter", datacenter);
  checkHolder(holder);
}
