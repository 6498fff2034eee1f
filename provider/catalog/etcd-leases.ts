/** The etcd catalog's transfer leases: one holder per (image, datacenter), by compare-and-swap. */

import { leaseKey } from "./etcd-keys";
import type { EtcdStore } from "./etcd-store";
import { acquiredLease, liveLease } from "./leases";
import type { LeaseRecord } from "./types";
import { checkLease, checkLeaseArgs, checkLeaseKey } from "./validate";

export function acquireLease(
  s: EtcdStore,
  digest: string,
  datacenter: string,
  holder: string,
  ttlMs: number,
): Promise<boolean> {
  return s.run(
    `acquire the lease on ${JSON.stringify(digest)} in ${JSON.stringify(datacenter)}`,
    async () => {
      checkLeaseArgs(digest, datacenter, holder, ttlMs);
      return s.cas<LeaseRecord, boolean>(leaseKey(digest, datacenter), (cur) => {
        const lease = acquiredLease(cur, { digest, datacenter, holder, ttlMs }, Date.now());
        return lease ? { write: lease, result: true } : { result: false };
      });
    },
  );
}

export function getLease(s: EtcdStore, digest: string, datacenter: string): Promise<LeaseRecord | undefined> {
  return s.run(`get the lease on ${JSON.stringify(digest)} in ${JSON.stringify(datacenter)}`, async () => {
    checkLeaseKey(digest, datacenter);
    const cur = await s.getChecked(leaseKey(digest, datacenter), "lease", checkLease);
    return liveLease(cur, Date.now());
  });
}

export function releaseLease(
  s: EtcdStore,
  digest: string,
  datacenter: string,
  holder: string,
): Promise<void> {
  return s.run(
    `release the lease on ${JSON.stringify(digest)} in ${JSON.stringify(datacenter)}`,
    async () => {
      checkLeaseArgs(digest, datacenter, holder);
      // Only the holder's own lease is deleted, so anyone else's release does nothing.
      await s.cas<LeaseRecord, void>(leaseKey(digest, datacenter), (cur) =>
        cur && cur.holder === holder ? { write: null, result: undefined } : { result: undefined },
      );
    },
  );
}
