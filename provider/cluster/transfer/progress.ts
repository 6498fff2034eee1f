/**
 * A pull's progress: the bytes and chunks it has (held or stored), the rate over the last
 * second, reported to listeners and to the catalog's "transferring" placement.
 */
import type { Catalog } from "../../catalog";
import type { TransferProgress } from "./limits";

/** Where progress goes: the placement of `digest` in `datacenter`, and the pull's listeners. */
export interface ProgressTarget {
  readonly digest: string;
  readonly datacenter: string;
  readonly catalog: Catalog;
  /** The pull's cancel signal: a cancelled pull writes no placement (the removal deletes it). */
  readonly signal: AbortSignal;
  readonly emit: (p: TransferProgress) => void;
}

export class PullProgress {
  bytesTotal = 0;
  chunksTotal = 0;
  bytesDone = 0;
  chunksDone = 0;
  /** Bytes that came over the network (held chunks are not counted). */
  wire = 0;
  private windowBytes = 0;
  private windowStart = Date.now();
  private rate = 0;
  private lastReport = 0;

  constructor(private readonly target: ProgressTarget) {}

  /** A chunk this datacenter already held: done without a byte on the wire. */
  held(size: number): void {
    this.bytesDone += size;
    this.chunksDone++;
  }

  /** A streamed chunk, verified and durable. */
  stored(size: number): void {
    this.bytesDone += size;
    this.wire += size;
    this.windowBytes += size;
    this.chunksDone++;
  }

  /** Reports to listeners and the catalog, at most every 500 ms unless `force`. */
  async report(force = false): Promise<void> {
    const { digest, datacenter, catalog, signal } = this.target;
    const now = Date.now();
    if (now - this.windowStart >= 1000) {
      this.rate = (this.windowBytes * 1000) / (now - this.windowStart);
      this.windowBytes = 0;
      this.windowStart = now;
    }
    // A cancelled pull writes no placement: the removal deletes it.
    if (signal.aborted || (!force && now - this.lastReport < 500)) return;
    this.lastReport = now;
    const { bytesDone, bytesTotal, chunksDone, chunksTotal, rate } = this;
    this.target.emit({ bytesDone, bytesTotal, chunksDone, chunksTotal, rate });
    await catalog.putPlacement({
      digest,
      datacenter,
      state: "transferring",
      bytesDone,
      bytesTotal,
      error: "",
      updatedAt: now,
    });
  }
}
