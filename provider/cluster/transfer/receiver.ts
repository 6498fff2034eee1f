/**
 * The receiving side: ImagePuller brings an image into this datacenter from one that holds it.
 *
 * The invariants of a pull, kept by the steps named here:
 * 1. Each chunk is verified before it is stored: `store.putChunk` checks its sha256, and a chunk
 *    must be the one the checked layout names next (PullAttempt.received).
 * 2. The archive is validated: its format rules and whole digest are checked as the chunks arrive
 *    (PullAttempt.onLayout starts the validator; `commitImage` takes only its verdict).
 * 3. Nothing is "present" before it is durable: the placement turns "present" only after every
 *    chunk is fsynced and the image committed (PullAttempt.run, then `markPresent`).
 * 4. A cancelled pull is never marked present: the cancel is checked after the commit, before
 *    `markPresent`, it writes no progress, and it leaves no placement (`pull`, `pullFrom`).
 * 5. The lease is held while transferring: every attempt runs inside a held TransferLease,
 *    renewed until the pull ends (`pull`).
 * Within this process, requests for the same image share one pull; across processes, the lease
 * makes exactly one transfer run and the others wait for its placement.
 */
import type { TransferSummary } from "../../../schema/gen/gci/v1/TransferSummary";
import type { PlacementRecord } from "../../catalog";
import { GciError, notFound, precondition, unavailable } from "../../common/errors";
import type { Pull, PullerArgs } from "./args";
import { PullAttempt } from "./attempt";
import { TransferLease } from "./lease";
import { RETRY_FOR_MS, type TransferProgress, sleep } from "./limits";

/** The error a cancelled pull ends with, and every request waiting on it. */
export function removedWhileTransferring(digest: string, datacenter: string): GciError {
  return precondition(
    `image ${digest} was removed from ${datacenter} while it was being transferred: the transfer was ` +
      `cancelled; push or replicate the image again if ${datacenter} still needs it`,
  );
}

/** Brings images into this datacenter: one pull per image at a time, under the invariants above. */
export class ImagePuller {
  private readonly inflight = new Map<string, Pull>();
  private readonly listeners = new Map<string, Set<(p: TransferProgress) => void>>();

  constructor(private readonly args: PullerArgs) {}

  /**
   * Makes the image present here. Returns the transfer that happened, or undefined when the
   * image was already here (or another request's transfer brought it).
   */
  ensure(
    digest: string,
    requestId: string,
    onProgress?: (p: TransferProgress) => void,
  ): Promise<TransferSummary | undefined> {
    if (onProgress) {
      const set = this.listeners.get(digest) ?? new Set();
      set.add(onProgress);
      this.listeners.set(digest, set);
    }
    let pull = this.inflight.get(digest);
    if (!pull) {
      const started: Pull = {
        done: Promise.resolve(undefined),
        cancel: new AbortController(),
        chunks: new Set(),
      };
      started.done = this.pull(digest, requestId, started).finally(() => {
        this.inflight.delete(digest);
        this.listeners.delete(digest);
      });
      this.inflight.set(digest, started);
      pull = started;
    }
    return pull.done;
  }

  /**
   * Cancels the pull of `digest` running here, if any (the image is being removed from this
   * datacenter): it stops, every request waiting on it fails with `reason`, and no placement is
   * left. Resolves once it has ended, with the chunks it had named (for the collector to drop).
   */
  async cancel(digest: string, reason: GciError): Promise<ReadonlySet<string>> {
    const pull = this.inflight.get(digest);
    if (!pull) return new Set();
    pull.cancel.abort(reason);
    // Only its end matters here: its failure (`reason`, or its own) reaches every request
    // waiting on it through ensure(), and the pull has logged it.
    await pull.done.catch(() => undefined);
    this.args.log.info("transfer.cancelled", { digest, error: reason.message });
    return pull.chunks;
  }

  /** Every chunk a pull running here relies on: the collector keeps them, whatever their age. */
  liveChunks(): Set<string> {
    const live = new Set<string>();
    for (const pull of this.inflight.values()) for (const sha of pull.chunks) live.add(sha);
    return live;
  }

  /**
   * On start-up: resume the transfers this datacenter had running when it stopped, unless the
   * image was removed meanwhile (its placement here, or its catalog record, is gone). The chunks
   * of one not resumed are unreferenced: the collector frees them after its grace.
   */
  async resumeInterrupted(): Promise<void> {
    const { datacenter, catalog, log } = this.args;
    for (const p of await catalog.listPlacements()) {
      if (p.datacenter !== datacenter || p.state !== "transferring") continue;
      const lease = await catalog.getLease(p.digest, datacenter);
      // Only one cluster manager runs per datacenter, so a lease of ours is a dead process's.
      if (lease?.holder.startsWith(`${datacenter}/`))
        await catalog.releaseLease(p.digest, datacenter, lease.holder);
      if (!(await catalog.getImage(p.digest))) {
        await catalog.deletePlacement(p.digest, datacenter);
        log.info("transfer.not_resumed", { digest: p.digest, reason: "the image is not in the catalog" });
        continue;
      }
      log.info("transfer.resuming", { digest: p.digest, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal });
      this.ensure(p.digest, `resume-${p.digest.slice(7, 19)}`).catch((e) =>
        log.warn("transfer.resume_failed", { digest: p.digest, error: String(e) }),
      );
    }
  }

  private emit(digest: string, p: TransferProgress): void {
    for (const fn of this.listeners.get(digest) ?? []) fn(p);
  }

  /** The image here already, or brought under the lease (invariant 5). */
  private async pull(digest: string, requestId: string, state: Pull): Promise<TransferSummary | undefined> {
    const { datacenter, store, catalog } = this.args;
    const { signal } = state.cancel;
    if (await store.has(digest)) {
      await this.markPresent(digest, requestId);
      return undefined;
    }
    const lease = await TransferLease.acquire(this.args, digest, requestId, signal);
    // Another transfer brought the image while we waited for its lease.
    if (!lease) return undefined;
    try {
      // The lease holder checks again: a transfer that finished while we waited brought it.
      if (await store.has(digest)) {
        await this.markPresent(digest, requestId);
        return undefined;
      }
      return await this.pullWithRetries(digest, requestId, state);
    } catch (e) {
      // A cancelled pull leaves no placement: the removal that cancelled it deletes the image here.
      if (signal.aborted) await catalog.deletePlacement(digest, datacenter);
      throw e;
    } finally {
      await lease.release();
    }
  }

  /** Tries every source, with backoff, until one succeeds, the pull is cancelled, or retryForMs passes. */
  private async pullWithRetries(digest: string, requestId: string, state: Pull): Promise<TransferSummary> {
    const { log } = this.args;
    const { signal } = state.cancel;
    let lastError: unknown;
    const giveUpAt = Date.now() + (this.args.retryForMs ?? RETRY_FOR_MS);
    for (let attempt = 1; Date.now() < giveUpAt; attempt++) {
      signal.throwIfAborted();
      const sources = await this.sources(digest);
      log.info("image.lookup", {
        requestId,
        digest,
        here: false,
        presentIn: sources.map((s) => s.datacenter),
        attempt,
      });
      if (sources.length === 0) {
        lastError = notFound(
          `image ${digest} is not present in any datacenter the catalog knows: push it with \`gci image push\``,
        );
        break;
      }
      for (const source of sources) {
        try {
          return await this.pullFrom(digest, source.datacenter, requestId, state);
        } catch (e) {
          // A removal cancelled it: no retry, no "failed" placement.
          signal.throwIfAborted();
          lastError = e;
          log.warn("transfer.failed", {
            requestId,
            digest,
            source: source.datacenter,
            attempt,
            error: String(e),
          });
        }
      }
      await sleep(Math.min(2000, 250 * attempt));
    }
    throw await this.recordFailed(digest, lastError);
  }

  /** Records the placement "failed" with the last attempt's error; returns that error to throw. */
  private async recordFailed(digest: string, lastError: unknown): Promise<GciError> {
    const error = GciError.isInstance(lastError) ? lastError : unavailable(String(lastError));
    await this.args.catalog.putPlacement({
      digest,
      datacenter: this.args.datacenter,
      state: "failed",
      bytesDone: 0,
      bytesTotal: 0,
      error: error.message,
      updatedAt: Date.now(),
    });
    return error;
  }

  /** Datacenters holding the image, those of our own region first. */
  private async sources(digest: string): Promise<PlacementRecord[]> {
    const { datacenter, region, catalog } = this.args;
    const present = (await catalog.listPlacements(digest)).filter(
      (p) => p.state === "present" && p.datacenter !== datacenter,
    );
    const regionOf = new Map((await catalog.listDatacenters()).map((d) => [d.name, d.region]));
    return present
      .filter((p) => regionOf.has(p.datacenter))
      .sort(
        (a, b) =>
          Number(regionOf.get(b.datacenter) === region) - Number(regionOf.get(a.datacenter) === region),
      );
  }

  /** One attempt from `source` (invariants 1–3), then "present" unless it was cancelled (4). */
  private async pullFrom(
    digest: string,
    source: string,
    requestId: string,
    state: Pull,
  ): Promise<TransferSummary> {
    const emit = (p: TransferProgress): void => this.emit(digest, p);
    const summary = await new PullAttempt(this.args, digest, source, requestId, state, emit).run();
    // Cancelled after its bytes were stored: the removal deletes the copy; it must not be "present".
    state.cancel.signal.throwIfAborted();
    await this.markPresent(digest, requestId);
    return summary;
  }

  private async markPresent(digest: string, requestId: string): Promise<void> {
    const { datacenter, store, catalog, log } = this.args;
    const entry = await store.get(digest);
    if (!entry) throw notFound(`image ${digest} vanished from the store of ${datacenter}`);
    const existing = await catalog.getPlacement(digest, datacenter);
    if (existing?.state === "present") return;
    await catalog.putPlacement({
      digest,
      datacenter,
      state: "present",
      bytesDone: entry.sizeBytes,
      bytesTotal: entry.sizeBytes,
      error: "",
      updatedAt: Date.now(),
    });
    log.info("placement.recorded", { requestId, digest, state: "present" });
  }
}
