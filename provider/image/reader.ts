/**
 * The per-entry rules of an image archive as it is read: entry types, extended-header and
 * manifest limits, offsets (truncation), the manifest's place, and the rules that need the whole
 * archive once it has been read (links, manifest references, the disk, the digest).
 */

import type * as tar from "tar-stream";
import { GciError, dataLoss, invalid } from "../common/errors";
import { type Meter, show } from "../common/digest";
import { DiskHeads } from "./disks";
import { MANIFEST_NAME, MAX_MANIFEST_BYTES, type Manifest, parseManifest, referencedPaths } from "./manifest";
import { type EntryKind, entryPath } from "./paths";
import { oneBuffer } from "./streams";
import { ImageTree } from "./tree";
import type { ArchiveEntry, ImageInfo, ReadImageOptions } from "./types";

/** Largest pax / GNU long-name headers (with their own header blocks) allowed before one entry. */
export const MAX_EXTENDED_HEADER_BYTES = 16 * 1024;

const BLOCK = 512;
/** Two zero blocks end a tar archive; without them the archive was cut at an entry boundary. */
const END_MARKER_BYTES = 2 * BLOCK;

/** A header as tar-stream reports it; fields its types declare may still be null at run time. */
type TarHeader = tar.Header;
/** One entry of tar-stream's extractor: its header and a (streamx) readable of its data. */
export type TarEntry = AsyncIterable<unknown> & { readonly header: TarHeader; resume(): unknown };

/** Per-archive state of the checks that need history: the tree so far, offsets, the manifest. */
export class ArchiveReader {
  private readonly tree = new ImageTree();
  private readonly disks = new DiskHeads();
  /** Entries seen, root-directory entries ("./") not counted. */
  private count = 0;
  /** Byte offset just past the previous entry's data and padding. */
  private dataEnd = 0;
  private firstPath?: string;
  /** Name of the entry being read, for messages about truncation. */
  current?: string;
  private manifest?: Manifest;

  /** Checks one entry, reads it if it is the manifest, and hands it to `onEntry`. */
  async visit(stream: TarEntry, onEntry: ReadImageOptions["onEntry"]): Promise<void> {
    const entry = this.admit(stream.header);
    if (entry?.path === MANIFEST_NAME) {
      const bytes = await this.readManifest(stream, entry.size);
      if (onEntry !== undefined) await onEntry(entry, oneBuffer(bytes));
    } else if (entry?.type === "file") {
      // Every regular file's first bytes are judged: the manifest's disk may reach it through links.
      const data = this.disks.watch(entry.path, this.manifest?.disk, stream as AsyncIterable<Buffer>);
      if (onEntry !== undefined) await onEntry(entry, data);
      else for await (const piece of data) void piece;
    } else if (entry !== undefined && onEntry !== undefined) {
      await onEntry(entry, stream as AsyncIterable<Buffer>);
    }
    // Unread data (skipped entries) must still flow, or tar-stream waits for a reader forever.
    stream.resume();
  }

  /** The per-entry rules; undefined for the image root's own directory entry. */
  private admit(header: TarHeader): ArchiveEntry | undefined {
    this.current = header.name;
    this.trackOffsets(header);
    const type = entryType(header);
    const size = header.size ?? 0;
    if (type !== "file" && size > 0) {
      throw invalid(
        `entry ${show(header.name)} is a ${type} but declares ${size} bytes of data; re-pack the image.`,
      );
    }
    const path = entryPath(header.name);
    if (path === "") {
      if (type === "directory") return undefined;
      throw invalid(`entry ${show(header.name)} names the image root but is a ${type}; re-pack the image.`);
    }
    this.checkManifestPosition(path, type);
    const linkTarget = this.tree.add(path, type, header.linkname ?? undefined);
    return { path, type, size, mode: normalMode(type, header.mode ?? 0), linkTarget };
  }

  /** Measures the extended headers before this entry, and where its data ends. */
  private trackOffsets(header: TarHeader): void {
    // tar-stream 3 reports where an entry's data starts; the gap to the previous entry's end
    // is exactly what its pax / long-name headers took (tar-stream buffers them up to 4 MiB
    // itself, so this bounds what we accept, not what it reads).
    const dataStart = (header as { byteOffset?: unknown }).byteOffset;
    if (typeof dataStart !== "number") {
      throw new GciError(
        "INTERNAL",
        "tar-stream did not report entry offsets; the image reader needs tar-stream 3.",
      );
    }
    const extended = dataStart - BLOCK - this.dataEnd;
    if (extended > MAX_EXTENDED_HEADER_BYTES) {
      throw invalid(
        `entry ${show(header.name)} carries ${extended} bytes of pax/long-name headers; the limit is ` +
          `${MAX_EXTENDED_HEADER_BYTES} bytes (16 KiB). Shorten its path or link target and drop ` +
          `extended attributes, then pack again.`,
      );
    }
    // tar-stream reads no data for directories whatever their size field says.
    const size = header.type === "directory" ? 0 : (header.size ?? 0);
    this.dataEnd = dataStart + Math.ceil(size / BLOCK) * BLOCK;
  }

  private checkManifestPosition(path: string, type: EntryKind): void {
    if (path === MANIFEST_NAME && this.count > 0) {
      throw invalid(
        `entry "${MANIFEST_NAME}" is entry #${this.count + 1}, after ${show(this.firstPath)}: the manifest ` +
          `must be the first entry so the image can be checked before its files are read. ` +
          `Re-pack the image with packDirectory.`,
      );
    }
    if (path === MANIFEST_NAME && type !== "file") {
      throw invalid(`entry "${MANIFEST_NAME}" is a ${type}; it must be a regular file holding JSON.`);
    }
    if (this.count === 0) this.firstPath = path;
    this.count++;
  }

  private async readManifest(stream: AsyncIterable<unknown>, size: number): Promise<Buffer> {
    if (size > MAX_MANIFEST_BYTES) {
      throw invalid(
        `entry "${MANIFEST_NAME}" is ${size} bytes; the limit is ${MAX_MANIFEST_BYTES} bytes (64 KiB). ` +
          `Keep large data in files of the image and reference them from the manifest.`,
      );
    }
    const parts: Buffer[] = [];
    for await (const part of stream) parts.push(part as Buffer);
    const bytes = Buffer.concat(parts);
    this.manifest = parseManifest(bytes);
    return bytes;
  }

  /** The rules that need the whole archive; resolves with what was established. */
  finish(meter: Meter, expectedDigest: string | undefined): ImageInfo {
    if (this.manifest === undefined) {
      const first =
        this.firstPath === undefined
          ? "the archive has no entries"
          : `its first entry is ${show(this.firstPath)}`;
      throw invalid(
        `archive has no "${MANIFEST_NAME}" (${first}); an image archive must start with its manifest. ` +
          `Pack the image with packDirectory.`,
      );
    }
    const tail = meter.bytes - this.dataEnd;
    if (tail < END_MARKER_BYTES) {
      throw invalid(
        `archive is truncated: it ends ${tail} bytes after entry ${show(this.current)} without the ` +
          `end-of-archive marker (two zero blocks), so entries may be missing. Upload the complete file.`,
      );
    }
    const digest = meter.digest();
    if (expectedDigest !== undefined && digest !== expectedDigest) {
      throw dataLoss(
        `archive digest mismatch: expected ${expectedDigest}, but the bytes received hash to ${digest}. ` +
          `They were changed or cut in transit or storage; send the image again.`,
      );
    }
    this.tree.checkSymlinkChains();
    this.tree.checkReferences(referencedPaths(this.manifest));
    this.disks.checkLinked(this.tree, this.manifest.disk);
    return { digest, sizeBytes: meter.bytes, manifest: this.manifest, entries: this.count };
  }
}

/** The entry types an image may hold; device nodes and FIFOs are refused by name. */
function entryType(header: TarHeader): EntryKind {
  switch (header.type) {
    case "file":
    case "contiguous-file":
      return "file";
    case "directory":
    case "symlink":
    case "link":
      return header.type;
    case "character-device":
    case "block-device":
    case "fifo":
      throw invalid(
        `entry ${show(header.name)} is a ${header.type}; images may hold only regular files, directories ` +
          `and links, because device nodes and FIFOs give access to things outside the image. Remove it and pack again.`,
      );
    default:
      throw invalid(
        `entry ${show(header.name)} has an unsupported tar entry type (${String(header.type)}); images may hold ` +
          `only regular files, directories and links. Pack the image with packDirectory.`,
      );
  }
}

/** The mode an entry gets when extracted (and packed): only the executable bits are kept. */
export function normalMode(type: EntryKind, mode: number): number {
  if (type === "symlink") return 0o777;
  return type === "directory" || (mode & 0o111) !== 0 ? 0o755 : 0o644;
}
