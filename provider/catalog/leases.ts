/**
 * The transfer-lease rules both catalog engines apply inside their read-then-write steps: when a
 * lease binds others, and what acquiring one writes. One home, so SQLite and
 * etcd cannot drift apart.
 */

import type { LeaseRecord } from "./types";

/** True when a stored lease still binds others at `now`. */
export function leaseLive(lease: LeaseRecord, now: number): boolean {
  return lease.expiresAt > now;
}

/** The lease as a reader sees it at `now`: an expired lease binds no one, so it reads as free. */
export function liveLease(lease: LeaseRecord | undefined, now: number): LeaseRecord | undefined {
  return lease && leaseLive(lease, now) ? lease : undefined;
}

/**
 * The lease to write when `holder` asks for (digest, datacenter) at `now` while `current` is
 * stored: a free or expired lease is taken, the holder's own is renewed; undefined when someone
 * else holds it.
 */
export function acquiredLease(
  current: LeaseRecord | undefined,
  want: { digest: string; datacenter: string; holder: string; ttlMs: number },
  now: number,
): LeaseRecord | undefined {
  if (current && current.holder !== want.holder && leaseLive(current, now)) return undefined;
  return {
    digest: want.digest,
    datacenter: want.datacenter,
    holder: want.holder,
    expiresAt: now + want.ttlMs,
  };
}
