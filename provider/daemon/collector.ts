/**
 * What a cluster manager frees when nothing uses it: extracted images no group or live
 * instance of this datacenter uses, stored copies no placement names (the bytes a crash in
 * DeleteImage can leave), and the chunks and temporary files no stored image references
 * (what failed transfers leave; the store keeps them for its grace period first). It runs
 * after deletes and failed transfers, at start and on a slow timer, and logs what it freed.
 */

import type { Catalog, VmState } from "../catalog";
import type { ImageStore } from "../image";
import type { InstanceManager } from "./instances";
import type { Logger } from "./log";

/** Instance states whose instance may be running from its extracted image. */
const LIVE: readonly VmState[] = ["provisioning", "booting", "running", "stopping"];

/** How often the collector runs on its own. */
export const COLLECT_INTERVAL_MS = 10 * 60_000;

/**
 * Who is reading a stored copy right now, in this process: peer transfers sending it, and
 * uploads (whose digest is known only at their end, so they hold every copy).
 */
export class CopyUse {
  private readonly readers = new Map<string, Map<number, string>>();
  private uploads = 0;
  private next = 0;

  /** Registers `who` (e.g. "a transfer to eu-1") as reading `digest`; call the result when done. */
  read(digest: string, who: string): () => void {
    const id = this.next++;
    const of = this.readers.get(digest) ?? new Map<number, string>();
    of.set(id, who);
    this.readers.set(digest, of);
    return () => {
      of.delete(id);
      if (of.size === 0 && this.readers.get(digest) === of) this.readers.delete(digest);
    };
  }

  /** Who reads `digest` now. */
  readersOf(digest: string): string[] {
    return [...(this.readers.get(digest)?.values() ?? [])];
  }

  /** Registers an upload in flight; call the result when it is recorded (or failed). */
  upload(): () => void {
    this.uploads++;
    let done = false;
    return () => {
      if (!done) this.uploads--;
      done = true;
    };
  }

  get uploading(): boolean {
    return this.uploads > 0;
  }
}

export interface CollectorArgs {
  readonly datacenter: string;
  readonly store: ImageStore;
  readonly catalog: Catalog;
  readonly instances: InstanceManager;
  readonly use: CopyUse;
  readonly log: Logger;
}

/** The collector of one cluster manager; one run at a time. */
export class Collector {
  private last: Promise<void> = Promise.resolve();

  constructor(private readonly args: CollectorArgs) {}

  /** Runs once after any run in progress; never rejects (a failure is logged, the next run retries). */
  collect(reason: string): Promise<void> {
    this.last = this.last.then(() =>
      this.once(reason).catch((e) => this.args.log.warn("collect.failed", { reason, error: String(e) })),
    );
    return this.last;
  }

  private async once(reason: string): Promise<void> {
    const used = await this.usedDigests();
    const extracted = await this.args.instances.collectExtracted(used);
    const copies = await this.unplacedCopies(used);
    const gc = await this.args.store.gc();
    if (extracted + copies + gc.chunksRemoved + gc.tmpFilesRemoved === 0) return;
    this.args.log.info("collect.freed", {
      reason,
      extracted,
      copies,
      chunks: gc.chunksRemoved,
      bytesFreed: gc.bytesFreed,
      tmpFiles: gc.tmpFilesRemoved,
    });
  }

  /** Digests this datacenter's groups and live instances use. */
  private async usedDigests(): Promise<Set<string>> {
    const { catalog, datacenter } = this.args;
    const groups = await catalog.listVmGroups(datacenter);
    const vms = (await catalog.listVms({ datacenter })).filter((v) => LIVE.includes(v.state));
    return new Set([...groups.map((g) => g.digest), ...vms.map((v) => v.digest)]);
  }

  /** Deletes stored copies that no placement of this datacenter names and nothing uses; returns how many. */
  private async unplacedCopies(used: ReadonlySet<string>): Promise<number> {
    const { catalog, store, datacenter, use } = this.args;
    // An upload stores its copy before it records the placement.
    if (use.uploading) return 0;
    const placed = new Set(
      (await catalog.listPlacements()).filter((p) => p.datacenter === datacenter).map((p) => p.digest),
    );
    let deleted = 0;
    for (const entry of await store.list()) {
      const digest = entry.digest;
      if (placed.has(digest) || used.has(digest) || use.readersOf(digest).length > 0) continue;
      // A transfer into this datacenter holds the lease until it has recorded the placement.
      if (await catalog.getLease(digest, datacenter)) continue;
      if (await store.delete(digest)) deleted++;
    }
    return deleted;
  }
}
