/**
 * The GCI image format: a tar archive whose first entry is `manifest.json`, followed by the
 * image's files. `packDirectory` writes one reproducibly; `readImage` streams an untrusted one
 * and checks every entry as it arrives, so a bad archive is refused before its files are used
 * and memory stays bounded whatever the archive's size.
 */

import { createReadStream, createWriteStream } from "fs";
import { lstat, readdir, readlink, realpath, stat, unlink } from "fs/promises";
import { join } from "path";
import type { Readable, Writable } from "stream";
import { pipeline } from "stream/promises";
import * as tar from "tar-stream";
import { GciError, dataLoss, invalid, notFound, precondition } from "../errors";
import { Meter, checkDigest, show } from "./digest";
import {
  MANIFEST_NAME,
  MAX_MANIFEST_BYTES,
  type Manifest,
  assertManifest,
  parseManifest,
  referencedPaths,
  serializeManifest,
} from "./manifest";
import { type EntryKind, ImageTree, entryPath } from "./paths";
import { DISK_HEADER_BYTES, checkDisk, diskProblem, isQcow2 } from "./qcow2";

/** Largest pax / GNU long-name headers (with their own header blocks) allowed before one entry. */
export const MAX_EXTENDED_HEADER_BYTES = 16 * 1024;

const BLOCK = 512;
/** Two zero blocks end a tar archive; without them the archive was cut at an entry boundary. */
const END_MARKER_BYTES = 2 * BLOCK;
const EPOCH = new Date(0);

/** A header as tar-stream reports it; fields its types declare may still be null at run time. */
type TarHeader = tar.Header;
type TarHeaderArgument = Parameters<tar.Pack["entry"]>[0];
/** One entry of tar-stream's extractor: its header and a (streamx) readable of its data. */
type TarEntry = AsyncIterable<unknown> & { readonly header: TarHeader; resume(): unknown };

/**
 * The part of a writable that backpressure needs. tar-stream's streams are streamx streams,
 * whose typings differ from Node's; both have these members.
 */
interface Sink {
  readonly destroyed: boolean;
  readonly destroying?: boolean;
  write(data: Buffer): boolean;
  end(): unknown;
  destroy(err?: Error): void;
  on(event: "drain" | "close", listener: () => void): unknown;
  off(event: "drain" | "close", listener: () => void): unknown;
}

/** Views a streamx writable through the Sink interface (a cast, confined here). */
function flowing(stream: unknown): Sink {
  return stream as Sink;
}

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

/**
 * Streams an untrusted image archive, verifying it as it goes, and resolves with its manifest
 * and digest. Rejects with INVALID_ARGUMENT naming the entry and the rule it breaks, or
 * DATA_LOSS when `expectedDigest` does not match.
 */
export async function readImage(source: ArchiveSource, options: ReadImageOptions = {}): Promise<ImageInfo> {
  if (options.expectedDigest !== undefined) checkDigest(options.expectedDigest, "expected digest");
  const input = typeof source === "string" ? await openArchiveFile(source) : source;
  const extract = tar.extract();
  const meter = new Meter();
  const reader = new ArchiveReader();
  let tarError: unknown;
  extract.on("error", (e: unknown) => {
    tarError ??= e;
  });
  const feeder = new Feeder(input, flowing(extract), meter, options.onBytes);
  try {
    for await (const entry of extract) await reader.visit(entry, options.onEntry);
  } catch (e) {
    await settle(extract);
    // Not `await feeder.done`: a stalled upload would keep the rejection waiting for its next byte.
    await feeder.stop();
    throw explain(e, feeder.error, tarError, reader, meter);
  }
  await feeder.done;
  if (feeder.error !== undefined) throw feeder.error;
  return reader.finish(meter, options.expectedDigest);
}

/** Checks an archive without keeping any of it; same rules and errors as readImage. */
export function validateArchive(
  source: ArchiveSource,
  options: Pick<ReadImageOptions, "expectedDigest"> = {},
): Promise<ImageInfo> {
  return readImage(source, { expectedDigest: options.expectedDigest });
}

/**
 * Packs a directory into an image archive. Reproducible: entries sorted by path, mtime 0,
 * owner 0/0 without names, modes 0755/0644, so the same files and manifest give the same digest.
 * Symlinks are kept only when relative and inside `dir`; other special files are refused.
 */
export async function packDirectory(
  dir: string,
  manifest: Manifest,
  out: string | Writable,
): Promise<PackResult> {
  const valid = assertManifest(manifest, "the manifest passed to packDirectory");
  const root = await realDirectory(dir);
  const items = await listTree(root);
  checkPackable(root, items, valid);

  const pack = tar.pack();
  const sink = typeof out === "string" ? createWriteStream(out) : out;
  const meter = new Meter();
  const writing = copyOut(pack, sink, meter);
  writing.catch(() => undefined); // awaited below; this only keeps an early failure from being "unhandled"
  try {
    await addEntry(
      pack,
      { ...HEADER_BASE, name: MANIFEST_NAME, type: "file", mode: 0o644 },
      serializeManifest(valid),
    );
    for (const item of items) await addItem(pack, root, item);
    pack.finalize();
    await writing;
  } catch (e) {
    pack.destroy(e as Error);
    // When the sink failed, the producer only saw the pack torn down: report the sink's error.
    const writeError = await writing.then(
      () => undefined,
      (w: unknown) => w,
    );
    if (typeof out === "string") {
      sink.destroy();
      await unlink(out).catch(() => undefined);
    }
    throw GciError.isInstance(e) || writeError === undefined ? e : writeError;
  }
  return { digest: meter.digest(), sizeBytes: meter.bytes };
}

/** Per-archive state of the checks that need history: the tree so far, offsets, the manifest. */
class ArchiveReader {
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

/**
 * The push-time half of the qcow2 rule (provider/image/qcow2.ts): each regular file's first
 * DISK_HEADER_BYTES are judged as they stream past. The manifest's disk, named directly, is
 * refused at once with the header's own reason; other files that would make QEMU open another
 * file are only remembered by path, in case the disk reaches them through links.
 */
class DiskHeads {
  private readonly flagged = new Set<string>();

  /** Passes a file's data through unchanged, judging its head on the way. */
  async *watch(path: string, disk: string | undefined, data: AsyncIterable<Buffer>): AsyncIterable<Buffer> {
    const head: Buffer[] = [];
    let size = 0;
    let judged = false;
    for await (const piece of data) {
      if (!judged) {
        head.push(piece);
        size += piece.length;
        // The magic decides once 4 bytes are here (anything else QEMU attaches raw); a qcow2 is
        // judged on its whole header. Nothing is kept after that.
        const rawDisk = size >= 4 && size - piece.length < 4 && !isQcow2(Buffer.concat(head));
        if (rawDisk || size >= DISK_HEADER_BYTES) {
          this.judge(path, disk, Buffer.concat(head));
          judged = true;
          head.length = 0;
        }
      }
      yield piece;
    }
    if (!judged) this.judge(path, disk, Buffer.concat(head));
  }

  /** Once the archive is known: the disk must not be, through links, a file judged unsafe. */
  checkLinked(tree: ImageTree, disk: string | undefined): void {
    if (disk === undefined) return;
    const file = tree.fileBehind(disk);
    if (file === undefined || !this.flagged.has(file)) return;
    throw invalid(
      `disk ${show(disk)} (manifest field "disk") leads through links to ${show(file)}, a qcow2 image that ` +
        `names a backing file or an external data file, which QEMU would open on the host: a guest could ` +
        `read any host file through it. Make the disk self-contained (qemu-img convert -O qcow2 in.qcow2 ` +
        `out.qcow2, or -O raw) and pack the image again.`,
    );
  }

  private judge(path: string, disk: string | undefined, head: Buffer): void {
    const start = head.subarray(0, DISK_HEADER_BYTES);
    if (path === disk) checkDisk(show(path), start);
    else if (diskProblem(start) !== undefined) this.flagged.add(path);
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

function normalMode(type: EntryKind, mode: number): number {
  if (type === "symlink") return 0o777;
  return type === "directory" || (mode & 0o111) !== 0 ? 0o755 : 0o644;
}

/** Turns whatever stopped the read into the error to report: ours, the source's, or tar-stream's. */
function explain(
  e: unknown,
  feedError: unknown,
  tarError: unknown,
  reader: ArchiveReader,
  meter: Meter,
): unknown {
  if (GciError.isInstance(e)) return e;
  if (feedError !== undefined) return feedError;
  if (tarError === undefined) return e;
  const message = tarError instanceof Error ? tarError.message : String(tarError);
  const where = reader.current === undefined ? "before the first entry" : `in entry ${show(reader.current)}`;
  if (/unexpected end of data/i.test(message)) {
    return invalid(
      `archive is truncated: it ends ${where} after ${meter.bytes} bytes (tar-stream: ${message}). ` +
        `Upload the complete file.`,
    );
  }
  return invalid(
    `archive is not a valid tar file: ${message} (${where}, within the first ${meter.bytes} bytes). ` +
      `Upload an uncompressed tar written by packDirectory.`,
  );
}

/**
 * Copies the source into tar-stream, hashing on the way. Remembers the source's own error (set
 * before tar-stream is torn down, so the reader can tell it from a parse error) and the onBytes
 * call in flight (so a failed read can wait for it without waiting for a stalled source).
 */
class Feeder {
  error: unknown = undefined;
  inFlight: Promise<void> | void = undefined;
  readonly done: Promise<void>;

  constructor(
    private readonly input: AsyncIterable<Uint8Array>,
    private readonly extract: Sink,
    private readonly meter: Meter,
    private readonly onBytes: ReadImageOptions["onBytes"],
  ) {
    this.done = this.run();
  }

  private async run(): Promise<void> {
    try {
      for await (const piece of this.input) {
        if (isStopped(this.extract)) break;
        const bytes = Buffer.isBuffer(piece)
          ? piece
          : Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
        this.meter.update(bytes);
        this.inFlight = this.onBytes?.(bytes);
        await this.inFlight;
        this.inFlight = undefined;
        if (!this.extract.write(bytes)) await drained(this.extract);
      }
      if (!isStopped(this.extract)) this.extract.end();
    } catch (e) {
      this.error = e ?? new Error("archive source failed");
      this.extract.destroy(this.error as Error);
    }
  }

  /** After a failed read: lets the onBytes call in flight finish, and stops a source that can be stopped. */
  async stop(): Promise<void> {
    await Promise.resolve(this.inFlight).catch(() => undefined);
    const source = this.input as { destroy?: () => void };
    if (typeof source.destroy === "function") source.destroy();
  }
}

function isStopped(stream: Sink): boolean {
  return stream.destroyed || stream.destroying === true;
}

/** Resolves when a writable wants more data, or can never take any again. */
function drained(stream: Sink): Promise<void> {
  return new Promise((resolve) => {
    if (isStopped(stream)) return resolve();
    const done = (): void => {
      stream.off("drain", done);
      stream.off("close", done);
      resolve();
    };
    stream.on("drain", done);
    stream.on("close", done);
  });
}

/** Destroys the extractor (if the iterator has not) and waits until it has reported its error. */
async function settle(extract: tar.Extract): Promise<void> {
  if (extract.destroyed) return;
  const closed = new Promise<void>((resolve) => extract.once("close", () => resolve()));
  extract.destroy();
  await closed;
}

/** A single buffer as the async iterable onEntry expects. */
async function* oneBuffer(bytes: Buffer): AsyncIterable<Buffer> {
  yield bytes;
}

async function openArchiveFile(path: string): Promise<Readable> {
  const info = await stat(path).catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") throw notFound(`archive file ${show(path)} does not exist; check the path.`);
    throw e;
  });
  if (!info.isFile())
    throw invalid(`archive ${show(path)} is not a regular file; pass the path of a .tar file.`);
  return createReadStream(path, { highWaterMark: 1024 * 1024 });
}

// ---- packing ----

/** What packDirectory found in the directory, in archive order. */
interface PackItem {
  readonly path: string;
  readonly type: "file" | "directory" | "symlink";
  readonly size: number;
  readonly mode: number;
  readonly target?: string;
}

const HEADER_BASE = { mtime: EPOCH, uid: 0, gid: 0, uname: "", gname: "" } as const;

async function realDirectory(dir: string): Promise<string> {
  const root = await realpath(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") throw notFound(`image directory ${show(dir)} does not exist; check the path.`);
    throw e;
  });
  if (!(await stat(root)).isDirectory())
    throw invalid(`${show(dir)} is not a directory; pass the image's root directory.`);
  return root;
}

/** Every entry under root, sorted by path (a parent sorts before its children, being their prefix). */
async function listTree(root: string): Promise<PackItem[]> {
  const items: PackItem[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const name of await readdir(rel === "" ? root : join(root, rel))) {
      const path = rel === "" ? name : `${rel}/${name}`;
      const abs = join(root, path);
      const st = await lstat(abs);
      if (st.isDirectory()) {
        items.push({ path, type: "directory", size: 0, mode: 0o755 });
        await walk(path);
      } else if (st.isFile()) {
        items.push({ path, type: "file", size: st.size, mode: normalMode("file", st.mode) });
      } else if (st.isSymbolicLink()) {
        items.push({ path, type: "symlink", size: 0, mode: 0o777, target: await readlink(abs) });
      } else {
        throw invalid(
          `${show(abs)} is a device node, FIFO or socket; images may hold only regular files, directories ` +
            `and symlinks. Remove it from the directory before packing.`,
        );
      }
    }
  };
  await walk("");
  return items.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** Applies the reader's rules up front, so packDirectory never writes an archive readImage refuses. */
function checkPackable(root: string, items: readonly PackItem[], manifest: Manifest): void {
  const tree = new ImageTree(
    `Fix ${show(root)} before packing: packDirectory keeps only relative symlinks that stay inside it.`,
  );
  tree.add(MANIFEST_NAME, "file");
  for (const item of items) {
    if (item.path === MANIFEST_NAME) {
      throw invalid(
        `${show(join(root, MANIFEST_NAME))} exists, but packDirectory writes the manifest itself from its ` +
          `argument; remove the file from the directory.`,
      );
    }
    tree.add(entryPath(item.path), item.type, item.target);
  }
  tree.checkSymlinkChains();
  tree.checkReferences(referencedPaths(manifest));
}

async function addItem(pack: tar.Pack, root: string, item: PackItem): Promise<void> {
  const header: TarHeaderArgument = {
    ...HEADER_BASE,
    name: item.path,
    type: item.type,
    mode: item.mode,
    size: item.size,
  };
  if (item.type === "symlink") return addEntry(pack, { ...header, linkname: item.target });
  if (item.type === "directory" || item.size === 0)
    return addEntry(pack, header, item.type === "file" ? Buffer.alloc(0) : undefined);
  await addFile(pack, header, join(root, item.path), item.size);
}

/** Adds an entry whose body is in memory (or empty) and waits until tar-stream took it. */
function addEntry(pack: tar.Pack, header: TarHeaderArgument, body?: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error | null): void => (err ? reject(err) : resolve());
    if (body === undefined) pack.entry(header, done);
    else pack.entry(header, body, done);
  });
}

/** Streams a file into an entry; its size was fixed when the directory was listed. */
async function addFile(pack: tar.Pack, header: TarHeaderArgument, abs: string, size: number): Promise<void> {
  let sink!: Sink;
  const done = new Promise<void>((resolve, reject) => {
    sink = flowing(pack.entry(header, (err) => (err ? reject(err) : resolve())));
  });
  done.catch(() => undefined); // awaited below, after the copy
  for await (const part of createReadStream(abs, { start: 0, end: size - 1, highWaterMark: 1024 * 1024 })) {
    if (isStopped(sink)) break;
    if (!sink.write(part as Buffer)) await drained(sink);
  }
  sink.end();
  await done.catch((e: Error) => {
    // tar-stream refuses an entry whose data is shorter than its header said.
    if (!/size mismatch/i.test(e.message)) throw e;
    throw precondition(`${show(abs)} shrank while it was packed; pack again when nothing writes to it.`);
  });
}

/** Copies the archive to the sink with backpressure, hashing it; ends the sink. */
async function copyOut(pack: tar.Pack, sink: Writable, meter: Meter): Promise<void> {
  // tar-stream's pack is a streamx stream: read it as an async iterable and let Node's pipeline
  // own the sink (errors, backpressure, end, close).
  await pipeline(async function* () {
    for await (const part of pack) {
      meter.update(part as Buffer);
      yield part as Buffer;
    }
  }, sink);
}
