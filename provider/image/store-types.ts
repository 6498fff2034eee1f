/** The image store's public shapes: its chunk size limits, its records and its operations' options. */

import type { ImageInfo } from "./format";
import type { Manifest } from "./manifest";

/** Size of the chunks an archive is cut into (the last one may be shorter). */
export const CHUNK_SIZE = 4 * 1024 * 1024;
/** Largest chunk accepted from a peer, whatever chunk size its store uses. */
export const MAX_CHUNK_BYTES = 64 * 1024 * 1024;
/** How old an unreferenced chunk or temporary file must be before gc removes it. */
export const GC_GRACE_MS = 60 * 60 * 1000;

/** One chunk of an image, in archive order. */
export interface ChunkRef {
  /** sha256 hex of the chunk's bytes (no "sha256:" prefix). */
  readonly sha256: string;
  readonly size: number;
}

/** A stored image: what `images/<digesthex>.json` holds. */
export interface ImageEntry {
  /** "sha256:<hex>" of the whole archive. */
  readonly digest: string;
  readonly manifest: Manifest;
  readonly sizeBytes: number;
  /** In archive order. Frozen: entries are shared with the store's index. */
  readonly chunks: ChunkRef[];
}

/** Options of the ImageStore constructor. */
export interface ImageStoreOptions {
  /** Bytes per chunk for ingested archives. @default CHUNK_SIZE (4 MiB) */
  readonly chunkSize?: number;
}

/** Options of ImageStore.ingest. */
export interface IngestOptions {
  /** Image name the manifest must carry; the upload is refused otherwise. @default no check */
  readonly name?: string;
  /** Refuse the archive with DATA_LOSS unless its sha256 is this digest. @default no check */
  readonly expectedDigest?: string;
}

/** Options of ImageStore.commitImage. */
export interface CommitImageOptions {
  /** Image name the manifest must carry; empty means no check. @default no check */
  readonly name?: string;
  /**
   * What readImage established while the chunks arrived (a transfer validates the archive as
   * it streams in, see provider/cluster/transfer.ts): taken instead of reading every chunk
   * again. Its digest must be the one committed. @default the chunks are read and validated
   */
  readonly verified?: ImageInfo;
}

/** Options of ImageStore.gc. */
export interface GcOptions {
  /** Keep unreferenced chunks and temporary files younger than this, for transfers in flight. @default GC_GRACE_MS */
  readonly graceMs?: number;
  /** Unreferenced chunks to keep whatever their age (those a live transfer names). @default none */
  readonly keep?: ReadonlySet<string>;
  /** Unreferenced chunks to remove whatever their age (those of a cancelled transfer). @default none */
  readonly drop?: ReadonlySet<string>;
}

/** What gc removed. */
export interface GcResult {
  readonly chunksRemoved: number;
  readonly bytesFreed: number;
  readonly tmpFilesRemoved: number;
  /** Unreferenced chunks kept only because they are younger than the grace period. */
  readonly chunksYoung: number;
}
