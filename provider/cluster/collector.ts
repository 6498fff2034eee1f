/**
 * What a cluster manager frees when nothing uses it: extracted images no group or live
 * instance of this datacenter uses, stored copies no placement names (the bytes a crash in
 * DeleteImage can leave), and the chunks and temporary files no stored image references
 * (what failed, cancelled and abandoned transfers leave). It runs after deletes and failed
 * transfers, at start and on a slow timer, and logs what it freed.
 *
 * The rule for a chunk no stored image references (see ImageStore.gc):
 * - a chunk a pull running in this process names (what it told the source it holds, then its
 *   image's layout) is kept, however old: the pull commits it;
 * - a chunk of a cancelled pull (its image was removed here, see ImagePuller.cancel) goes at
 *   once: no retry will want it;
 * - any other (a pull that failed, or one a crash ended and that is not resumed) is kept for
 *   the grace period after it was last written (--chunk-grace-ms, default GC_GRACE_MS: 1 h), so
 *   a retry of the same image sends only what is missing, then goes. A run that keeps young
 *   chunks runs again once they are past the grace.
 * So the store's bytes come back to what its stored images need, and nothing a live pull or a
 * stored image needs is ever taken.
 */

import type { Catalog, VmState } from "../catalog";
import { GC_GRACE_MS, type ImageStore } from "../image";
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
  /** The chunks pulls running now rely on (ImagePuller.liveChunks). @default none */
  readonly liveChunks?: () => ReadonlySet<string>;
  /** How long an unreferenced chunk no live pull names is kept (--chunk-grace-ms). @default GC_GRACE_MS */
  readonly chunkGraceMs?: number;
}

/** The collector of one cluster manager; one run at a time. */
export class Collector {
  private last: Promise<void> = Promise.resolve();
  /** The run after the grace of chunks a run kept for being young; one at a time. */
  private later?: NodeJS.Timeout;

  constructor(private readonly args: CollectorArgs) {}

  /**
   * Runs once after any run in progress; never rejects (a failure is logged, the next run
   * retries). `drop`: chunks of a cancelled pull, freed now whatever their age.
   */
  collect(reason: string, drop?: ReadonlySet<string>): Promise<void> {
    this.last = this.last.then(() =>
      this.once(reason, drop).catch((e) =>
        this.args.log.warn("collect.failed", { reason, error: String(e) }),
      ),
    );
    return this.last;
  }

  /** Stops the run scheduled after a grace period. */
  stop(): void {
    clearTimeout(this.later);
    this.later = undefined;
  }

  private async once(reason: string, drop?: ReadonlySet<string>): Promise<void> {
    const graceMs = this.args.chunkGraceMs ?? GC_GRACE_MS;
    const used = await this.usedDigests();
    const extracted = await this.args.instances.collectExtracted(used);
    const copies = await this.unplacedCopies(used);
    const gc = await this.args.store.gc({ graceMs, keep: this.args.liveChunks?.(), drop });
    if (gc.chunksYoung > 0 && !this.later) {
      // Chunks a failed pull left: kept for a retry until the grace ends, then this frees them.
      this.later = setTimeout(() => {
        this.later = undefined;
        void this.collect("grace");
      }, graceMs + 100);
      this.later.unref();
    }
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
