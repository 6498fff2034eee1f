/** The SQLite catalog's transfer leases: one holder per (image, datacenter) at a time. */

import { acquiredLease, liveLease } from "./leases";
import type { LeaseRecord } from "./types";
import { LeaseRow, leaseOut, toLease } from "./sqlite-rows";
import type { SqliteStore } from "./sqlite-store";
import { checkLeaseArgs, checkLeaseKey } from "./validate";

export function acquireLease(
  s: SqliteStore,
  digest: string,
  datacenter: string,
  holder: string,
  ttlMs: number,
): Promise<boolean> {
  return s.run(`acquire the lease on ${JSON.stringify(digest)} in ${JSON.stringify(datacenter)}`, () => {
    checkLeaseArgs(digest, datacenter, holder, ttlMs);
    // IMMEDIATE takes the write lock before the read, so no other process can read the same
    // "free" lease between our read and our write.
    return s.immediate((): boolean => {
      const row = s
        .stmt("SELECT * FROM leases WHERE digest = ? AND datacenter = ?")
        .get(digest, datacenter) as LeaseRow | undefined;
      const lease = acquiredLease(row && toLease(row), { digest, datacenter, holder, ttlMs }, Date.now());
      if (!lease) return false;
      s.stmt(
        "INSERT OR REPLACE INTO leases (digest, datacenter, holder, expires_at) VALUES (?, ?, ?, ?)",
      ).run(lease.digest, lease.datacenter, lease.holder, lease.expiresAt);
      return true;
    });
  });
}

export function getLease(
  s: SqliteStore,
  digest: string,
  datacenter: string,
): Promise<LeaseRecord | undefined> {
  return s.run(`get the lease on ${JSON.stringify(digest)} in ${JSON.stringify(datacenter)}`, () => {
    checkLeaseKey(digest, datacenter);
    const row = s.db
      .prepare("SELECT * FROM leases WHERE digest = ? AND datacenter = ?")
      .get(digest, datacenter) as LeaseRow | undefined;
    return liveLease(row && leaseOut(row), Date.now());
  });
}

export function releaseLease(
  s: SqliteStore,
  digest: string,
  datacenter: string,
  holder: string,
): Promise<void> {
  return s.run(`release the lease on ${JSON.stringify(digest)} in ${JSON.stringify(datacenter)}`, () => {
    checkLeaseArgs(digest, datacenter, holder);
    // Only the holder's own lease matches, so anyone else's release does nothing.
    s.db
      .prepare("DELETE FROM leases WHERE digest = ? AND datacenter = ? AND holder = ?")
      .run(digest, datacenter, holder);
  });
}
