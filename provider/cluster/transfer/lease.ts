/**
 * The catalog lease that makes exactly one transfer of an image into a datacenter run at a time,
 * across processes: acquired (waiting for another holder), renewed while held, released.
 */
import { randomUUID } from "crypto";
import { unavailable } from "../../common/errors";
import type { PullerArgs } from "./args";
import { LEASE_TTL_MS, WAIT_FOR_OTHER_MS, sleep } from "./limits";

type LeaseArgs = Pick<PullerArgs, "datacenter" | "store" | "catalog" | "log">;

/** A held lease on the transfer of `digest` into this datacenter, renewed every third of its TTL. */
export class TransferLease {
  private readonly renewal: NodeJS.Timeout;

  private constructor(
    private readonly args: LeaseArgs,
    private readonly digest: string,
    private readonly holder: string,
    private readonly requestId: string,
  ) {
    this.renewal = setInterval(() => this.renew(), LEASE_TTL_MS / 3);
  }

  /**
   * Takes the lease, waiting while another transfer holds it. Resolves with undefined when the
   * image arrived meanwhile (that transfer brought it); throws when `signal` aborts or after
   * WAIT_FOR_OTHER_MS.
   */
  static async acquire(
    args: LeaseArgs,
    digest: string,
    requestId: string,
    signal: AbortSignal,
  ): Promise<TransferLease | undefined> {
    const { datacenter, store, catalog } = args;
    const holder = `${datacenter}/${process.pid}/${randomUUID()}`;
    const waitUntil = Date.now() + WAIT_FOR_OTHER_MS;
    while (!(await catalog.acquireLease(digest, datacenter, holder, LEASE_TTL_MS))) {
      if (await store.has(digest)) return undefined;
      signal.throwIfAborted();
      if (Date.now() > waitUntil)
        throw unavailable(`gave up waiting for another transfer of ${digest} into ${datacenter}`);
      await sleep(250);
    }
    return new TransferLease(args, digest, holder, requestId);
  }

  /** Stops renewing and gives the lease up; one not released (catalog down) expires after LEASE_TTL_MS. */
  async release(): Promise<void> {
    clearInterval(this.renewal);
    const { datacenter, catalog, log } = this.args;
    await catalog
      .releaseLease(this.digest, datacenter, this.holder)
      .catch((e: unknown) =>
        log.warn("transfer.lease_release_failed", { ...this.fields(), error: String(e) }),
      );
  }

  /**
   * One renewal. A failed one is logged and the transfer goes on: the next renewal may succeed
   * within the TTL; if none does, the lease expires and another process may take it over.
   */
  private renew(): void {
    const { datacenter, catalog, log } = this.args;
    catalog
      .acquireLease(this.digest, datacenter, this.holder, LEASE_TTL_MS)
      .catch((e: unknown) => log.warn("transfer.lease_renew_failed", { ...this.fields(), error: String(e) }));
  }

  private fields(): { requestId: string; digest: string; holder: string } {
    return { requestId: this.requestId, digest: this.digest, holder: this.holder };
  }
}
