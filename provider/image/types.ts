/**
 * The shapes the image format's reader and packer share with their callers: what to read, each
 * entry as it will be extracted, what a read or a pack established, and the read's options.
 */

import type { Manifest } from "./manifest";
import type { EntryKind } from "./paths";

/** An archive to read: a file path, or a stream of its bytes (a Readable is one). */
export type ArchiveSource = string | AsyncIterable<Uint8Array>;

/** One entry of an image as it will be extracted: canonical path, normalized mode. */
export interface ArchiveEntry {
  /** Relative to the image root, "/"-separated, no "." or ".." components. */
  readonly path: string;
  readonly type: EntryKind;
  /** Data bytes; 0 for everything but regular files. */
  readonly size: number;
  /** 0o755 for directories and executables, 0o644 for other files, 0o777 for symlinks. */
  readonly mode: number;
  /** Symlink target as written; for hardlinks, the canonical path of the linked file. */
  readonly linkTarget?: string;
}

/** What a successful read established about an archive. */
export interface ImageInfo {
  /** "sha256:<hex>" of the whole archive byte stream. */
  readonly digest: string;
  readonly sizeBytes: number;
  readonly manifest: Manifest;
  /** Entries in the archive, the manifest included. */
  readonly entries: number;
}

/** Options of readImage / validateArchive. */
export interface ReadImageOptions {
  /** Refuse the archive with DATA_LOSS unless its sha256 is this digest. @default no check */
  readonly expectedDigest?: string;
  /**
   * Called for each entry once it passed its checks, with its data, which it must consume.
   * Checks that need the whole archive (link chains, manifest references, digest) come after
   * the last call, so anything written here must be undone if readImage rejects.
   * @default entry data is skipped
   */
  readonly onEntry?: (entry: ArchiveEntry, data: AsyncIterable<Buffer>) => Promise<void>;
  /** Sees every raw byte of the archive, in order, before it is parsed. @default none */
  readonly onBytes?: (bytes: Buffer) => Promise<void> | void;
}

/** Result of packDirectory. */
export interface PackResult {
  /** "sha256:<hex>" of the archive written. */
  readonly digest: string;
  readonly sizeBytes: number;
}
