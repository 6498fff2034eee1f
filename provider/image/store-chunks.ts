/**
 * Chunk bookkeeping of the image store: which chunks records name (refs) and running operations
 * use (pins), the removal that never touches either, and the cutter that splits an archive.
 */

import { unlink } from "fs/promises";
import type { ChunkRef, ImageEntry } from "./store-types";

/** Chunks one operation uses (pinned) and those it added to the store (to remove if it fails). */
export interface Operation {
  readonly pinned: string[];
  readonly created: Set<string>;
}

/** A new operation, pinning nothing yet. */
export function newOperation(): Operation {
  return { pinned: [], created: new Set() };
}

/**
 * Per chunk, who relies on it: recorded images (refs) and running operations (pins), and the
 * removals under way. A chunk is unlinked only while neither names it.
 */
export class ChunkLedger {
  /** Per chunk, how many chunk slots of recorded images name it. */
  private readonly refs = new Map<string, number>();
  /** Per chunk, how many running operations rely on it. */
  private readonly pins = new Map<string, number>();
  /** Chunks being unlinked; a writer of the same chunk waits, then writes it afresh. */
  private readonly deleting = new Map<string, Promise<boolean>>();

  /** Whether a recorded image names the chunk. */
  isReferenced(sha: string): boolean {
    return this.refs.has(sha);
  }

  async pin(sha: string, op: Operation): Promise<void> {
    this.pins.set(sha, (this.pins.get(sha) ?? 0) + 1);
    op.pinned.push(sha);
    // A delete that started before the pin finishes first; the caller then sees the chunk absent.
    await this.deleting.get(sha);
  }

  unpin(op: Operation): void {
    for (const sha of op.pinned.splice(0)) {
      const n = (this.pins.get(sha) ?? 1) - 1;
      if (n === 0) this.pins.delete(sha);
      else this.pins.set(sha, n);
    }
  }

  /** Counts the chunk slots of a record that was written (+1) or removed (-1). */
  count(entry: ImageEntry, delta: 1 | -1): void {
    for (const { sha256 } of entry.chunks) {
      const n = (this.refs.get(sha256) ?? 0) + delta;
      if (n <= 0) this.refs.delete(sha256);
      else this.refs.set(sha256, n);
    }
  }

  /**
   * Unlinks the chunk at `path` if no record names it and no operation pins it. The check and
   * the start are synchronous.
   */
  async removeIfUnused(sha: string, path: string): Promise<boolean> {
    if (this.refs.has(sha) || this.pins.has(sha) || this.deleting.has(sha)) return false;
    const removal = unlink(path).then(
      () => true,
      // Not removed (already gone, or unlink refused): reported as false; an unreferenced chunk
      // left behind is only space, and the next gc tries again.
      () => false,
    );
    this.deleting.set(sha, removal);
    try {
      return await removal;
    } finally {
      this.deleting.delete(sha);
    }
  }
}

/** Cuts a byte stream into fixed-size chunks, handing each to `keep` as it fills. */
export class ChunkCutter {
  private pieces: Buffer[] = [];
  private filled = 0;
  private readonly chunks: ChunkRef[] = [];

  constructor(
    private readonly size: number,
    private readonly keep: (data: Buffer) => Promise<string>,
  ) {}

  async push(bytes: Buffer): Promise<void> {
    let rest = bytes;
    while (rest.length > 0) {
      const take = Math.min(rest.length, this.size - this.filled);
      this.pieces.push(rest.subarray(0, take));
      this.filled += take;
      rest = rest.subarray(take);
      if (this.filled === this.size) await this.flush();
    }
  }

  /** Stores the last, shorter chunk and returns the chunk list. */
  async finish(): Promise<ChunkRef[]> {
    if (this.filled > 0) await this.flush();
    return this.chunks;
  }

  private async flush(): Promise<void> {
    const data = Buffer.concat(this.pieces, this.filled);
    this.pieces = [];
    this.filled = 0;
    this.chunks.push({ sha256: await this.keep(data), size: data.length });
  }
}
