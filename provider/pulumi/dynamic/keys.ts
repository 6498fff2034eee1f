import { createHash } from "crypto";

/**
 * Idempotency keys. A request id must be the same when an interrupted `pulumi up` is run
 * again (so the cluster manager finds the request it already accepted instead of starting a
 * second one), and different for a replacement (whose new VMs run next to the old ones for
 * a while). Randomness cannot give the first, since nothing the provider returns survives a
 * killed engine; so ids are derived from the resource's stable key (project, stack, type,
 * parent and name, computed by the SDK) and its replacement generation, which `check`
 * counts up each time a change forces a replacement.
 */

/** The request id of a resource's create: "<prefix>-<16 hex>", plus "-<n>" for the n-th retry after a failure. */
export function derivedRequestId(prefix: string, key: string, generation: number, attempt = 0): string {
  const hash = createHash("sha256").update(`${key}#${generation}`).digest("hex").slice(0, 16);
  return attempt === 0 ? `${prefix}-${hash}` : `${prefix}-${hash}-${attempt}`;
}

/**
 * The generation of the inputs `check` returns: 0 for a new resource, the old one when the
 * change is made in place, one more when it forces a replacement.
 */
export function nextGeneration(
  olds: { generation?: unknown } | undefined,
  replaces: readonly string[],
): number {
  const old =
    typeof olds?.generation === "number" && Number.isSafeInteger(olds.generation) ? olds.generation : -1;
  if (old < 0) return 0;
  return replaces.length > 0 ? old + 1 : old;
}
