/**
 * The content-addressed image store of one cluster manager. An archive is cut into fixed-size
 * chunks, each kept once under its sha256; an image is a record of its manifest and ordered
 * chunk list, named by the digest of the whole archive, and written only after both the chunks
 * and the whole were verified. Layout under the root:
 *
 *   chunks/<aa>/<sha256hex>   each chunk once, read-only, durable before it is referenced
 *   images/<digesthex>.json   { digest, manifest, sizeBytes, chunks: [{ sha256, size }] }
 *   tmp/                      partial writes, renamed into place once fsync'd
 *
 * One ImageStore object owns a root: it keeps the records in memory and coordinates its own
 * concurrent operations (pins keep delete and gc away from chunks an operation is using).
 */

import { randomUUID } from "crypto";
import { mkdir, open, readFile, readdir, rename, stat, unlink, utimes } from "fs/promises";
import { dirname, join } from "path";
import { Readable } from "stream";
import { GciError, dataLoss, invalid, notFound, precondition } from "../common/errors";
import { SHA256_HEX_PATTERN, checkChunkSha, checkDigest, sha256Hex, show } from "../common/digest";
import { type ArchiveSource, type ImageInfo, readImage } from "./format";
import { type Manifest, assertManifest } from "./manifest";

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

/** Chunks one operation uses (pinned) and those it added to the store (to remove if it fails). */
interface Operation {
  readonly pinned: string[];
  readonly created: Set<string>;
}

/** A content-addressed store of images under one root directory. */
export class ImageStore {
  readonly root: string;
  readonly chunkSize: number;
  private loaded?: Promise<Map<string, ImageEntry>>;
  /** Per chunk, how many chunk slots of recorded images name it. */
  private readonly refs = new Map<string, number>();
  /** Per chunk, how many running operations rely on it. */
  private readonly pins = new Map<string, number>();
  /** Chunks being unlinked; a writer of the same chunk waits, then writes it afresh. */
  private readonly deleting = new Map<string, Promise<boolean>>();
  private readonly activeTmp = new Set<string>();
  /** Serializes record writes, delete and gc. */
  private tail: Promise<unknown> = Promise.resolve();
  /** Chunk prefix directories known to exist (and be durable). */
  private readonly prefixes = new Set<string>();

  constructor(root: string, options: ImageStoreOptions = {}) {
    const chunkSize = options.chunkSize ?? CHUNK_SIZE;
    if (!Number.isInteger(chunkSize) || chunkSize < 1 || chunkSize > MAX_CHUNK_BYTES) {
      throw invalid(
        `chunkSize ${show(chunkSize)} is not valid: use an integer from 1 to ${MAX_CHUNK_BYTES} bytes.`,
      );
    }
    this.root = root;
    this.chunkSize = chunkSize;
  }

  /**
   * Streams an archive into the store: validates it (format rules, digest), cuts it into
   * chunks stored durably as they arrive, then records the image. On failure no record is
   * written and the chunks this call added are removed again.
   */
  async ingest(source: ArchiveSource, options: IngestOptions = {}): Promise<ImageEntry> {
    await this.index();
    const op = newOperation();
    const cutter = new ChunkCutter(this.chunkSize, (data) => this.keepChunk(data, op));
    try {
      const info = await readImage(source, {
        expectedDigest: options.expectedDigest,
        onBytes: (b) => cutter.push(b),
      });
      const chunks = await cutter.finish();
      checkName(info.manifest, options.name);
      return await this.record({
        digest: info.digest,
        manifest: info.manifest,
        sizeBytes: info.sizeBytes,
        chunks,
      });
    } catch (e) {
      this.unpin(op);
      await Promise.all([...op.created].map((sha) => this.removeIfUnused(sha)));
      throw e;
    } finally {
      this.unpin(op);
    }
  }

  /** Whether the image is recorded (all its chunks verified). */
  async has(digest: string): Promise<boolean> {
    return (await this.get(digest)) !== undefined;
  }

  /** The image's record, or undefined. */
  async get(digest: string): Promise<ImageEntry | undefined> {
    const hex = checkDigest(digest);
    return (await this.index()).get(hex);
  }

  /** Every recorded image, by digest. */
  async list(): Promise<ImageEntry[]> {
    return [...(await this.index()).values()].sort((a, b) => (a.digest < b.digest ? -1 : 1));
  }

  /** Removes the image's record, then its chunks no other image uses. False if it was not stored. */
  async delete(digest: string): Promise<boolean> {
    const hex = checkDigest(digest);
    return this.exclusive(async () => {
      const index = await this.index();
      const entry = index.get(hex);
      if (entry === undefined) return false;
      await unlink(this.recordPath(hex));
      await fsyncDirectory(join(this.root, "images"));
      index.delete(hex);
      this.count(entry, -1);
      for (const sha of new Set(entry.chunks.map((c) => c.sha256))) await this.removeIfUnused(sha);
      return true;
    });
  }

  /**
   * Removes unreferenced chunks older than the grace period (or named in `drop`) unless named
   * in `keep`, and stale temporary files. Referenced and pinned chunks are never removed.
   */
  async gc(options: GcOptions = {}): Promise<GcResult> {
    const grace = options.graceMs ?? GC_GRACE_MS;
    return this.exclusive(async () => {
      await this.index();
      const now = Date.now();
      let chunksRemoved = 0;
      let bytesFreed = 0;
      let chunksYoung = 0;
      for (const sha of await this.listChunks()) {
        if (this.refs.has(sha) || options.keep?.has(sha)) continue;
        const st = await stat(this.chunkPath(sha)).catch(() => undefined);
        if (st === undefined) continue;
        if (now - st.mtimeMs < grace && !options.drop?.has(sha)) {
          chunksYoung++;
          continue;
        }
        if (await this.removeIfUnused(sha)) {
          chunksRemoved++;
          bytesFreed += st.size;
        }
      }
      let tmpFilesRemoved = 0;
      for (const name of await readdir(join(this.root, "tmp"))) {
        const path = join(this.root, "tmp", name);
        const st = await stat(path).catch(() => undefined);
        if (this.activeTmp.has(path) || st === undefined || now - st.mtimeMs < grace) continue;
        await unlink(path).catch(() => undefined);
        tmpFilesRemoved++;
      }
      return { chunksRemoved, bytesFreed, tmpFilesRemoved, chunksYoung };
    });
  }

  /** Whether the store holds the chunk (as a file; readChunk verifies it). */
  async hasChunk(sha256: string): Promise<boolean> {
    checkChunkSha(sha256);
    return (await stat(this.chunkPath(sha256)).catch(() => undefined))?.isFile() === true;
  }

  /** The sha256 hex of every chunk the store holds, referenced or not. */
  async listChunks(): Promise<Set<string>> {
    await this.index();
    const held = new Set<string>();
    const top = join(this.root, "chunks");
    for (const prefix of await readdir(top)) {
      if (!/^[0-9a-f]{2}$/.test(prefix)) continue;
      for (const name of await readdir(join(top, prefix)).catch(() => [] as string[])) {
        if (SHA256_HEX_PATTERN.test(name) && name.startsWith(prefix)) held.add(name);
      }
    }
    return held;
  }

  /** A chunk's bytes, verified against its name (DATA_LOSS if the file is corrupt). */
  async readChunk(sha256: string): Promise<Buffer> {
    checkChunkSha(sha256);
    const path = this.chunkPath(sha256);
    const data = await readFile(path).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== "ENOENT") throw e;
      throw notFound(
        `chunk ${sha256} is not in the store at ${show(this.root)}; transfer or upload the image again.`,
      );
    });
    const actual = sha256Hex(data);
    if (actual !== sha256) {
      throw dataLoss(
        `chunk ${sha256} in ${show(path)} is corrupt: its ${data.length} bytes hash to ${actual}. ` +
          `Delete the file; the next transfer of an image that uses it fetches it again.`,
      );
    }
    return data;
  }

  /** Stores a chunk durably after checking that `data` hashes to `sha256`; idempotent. */
  async putChunk(sha256: string, data: Uint8Array): Promise<void> {
    checkChunkSha(sha256);
    if (data.byteLength > MAX_CHUNK_BYTES) {
      throw invalid(
        `chunk ${sha256} is ${data.byteLength} bytes; chunks may be at most ${MAX_CHUNK_BYTES} bytes.`,
      );
    }
    const bytes = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const actual = sha256Hex(bytes);
    if (actual !== sha256) {
      throw dataLoss(
        `chunk ${sha256} does not match its data: the ${bytes.length} bytes received hash to ${actual}. ` +
          `The copy was damaged on the way; fetch the chunk again.`,
      );
    }
    await this.index();
    const op = newOperation();
    try {
      await this.pin(sha256, op);
      if (await this.hasChunk(sha256)) {
        // Refresh its age, so gc's grace period protects a chunk a transfer is about to commit.
        const now = new Date();
        await utimes(this.chunkPath(sha256), now, now).catch(() => undefined);
        return;
      }
      await this.writeChunkFile(sha256, bytes);
    } finally {
      this.unpin(op);
    }
  }

  /**
   * Records an image whose chunks were put one by one (a transfer): streams them in order,
   * re-verifying each chunk, the format rules and the whole digest, then writes the record.
   * DATA_LOSS or INVALID_ARGUMENT on any mismatch, and nothing is recorded.
   */
  async commitImage(
    digest: string,
    chunks: readonly ChunkRef[],
    options: CommitImageOptions = {},
  ): Promise<ImageEntry> {
    checkDigest(digest);
    const refs = checkChunkList(digest, chunks);
    await this.index();
    const op = newOperation();
    try {
      for (const ref of refs) await this.pin(ref.sha256, op);
      for (const [i, ref] of refs.entries()) {
        if (!(await this.hasChunk(ref.sha256))) {
          throw precondition(
            `chunk #${i} (${ref.sha256}) of image ${digest} is not in the store; put it with putChunk, then commit.`,
          );
        }
      }
      if (options.verified !== undefined && options.verified.digest !== digest) {
        throw new GciError(
          "INTERNAL",
          `commitImage of ${digest} was given the verification of ${options.verified.digest}`,
        );
      }
      const info = options.verified ?? (await readImage(this.chunkStream(refs), { expectedDigest: digest }));
      checkName(info.manifest, options.name);
      return await this.record({ digest, manifest: info.manifest, sizeBytes: info.sizeBytes, chunks: refs });
    } finally {
      this.unpin(op);
    }
  }

  /** The whole archive of a stored image, read chunk by chunk and verified as it goes. */
  async openArchive(digest: string): Promise<Readable> {
    const entry = await this.get(digest);
    if (entry === undefined) {
      throw notFound(
        `image ${digest} is not in the store at ${show(this.root)}; upload it or transfer it here first.`,
      );
    }
    return Readable.from(this.chunkStream(entry.chunks), { objectMode: false });
  }

  // ---- internals ----

  private async *chunkStream(refs: readonly ChunkRef[]): AsyncIterable<Buffer> {
    for (const [i, ref] of refs.entries()) {
      const data = await this.readChunk(ref.sha256);
      if (data.length !== ref.size) {
        throw dataLoss(
          `chunk #${i} (${ref.sha256}) is ${data.length} bytes, but the image's chunk list says ${ref.size}; ` +
            `the chunk list is wrong. Transfer or upload the image again.`,
        );
      }
      yield data;
    }
  }

  /** Records a verified image (once; an existing record is returned as is). */
  private record(entry: ImageEntry): Promise<ImageEntry> {
    return this.exclusive(async () => {
      const index = await this.index();
      const hex = entry.digest.slice("sha256:".length);
      const existing = index.get(hex);
      if (existing !== undefined) return existing;
      const body = freeze(entry);
      // Chunk files are fsynced as they are written, their names here: before the record names them.
      const dirs = new Set(entry.chunks.map((c) => dirname(this.chunkPath(c.sha256))));
      await Promise.all([...dirs].map((dir) => fsyncDirectory(dir)));
      await this.writeDurably(this.recordPath(hex), Buffer.from(`${JSON.stringify(body, null, 2)}\n`), 0o644);
      index.set(hex, body);
      this.count(body, +1);
      return body;
    });
  }

  /** Stores one chunk of an ingest (unless the store has it) and pins it for the operation. */
  private async keepChunk(data: Buffer, op: Operation): Promise<string> {
    const sha = sha256Hex(data);
    await this.pin(sha, op);
    if (!(await this.hasChunk(sha))) {
      await this.writeChunkFile(sha, data);
      op.created.add(sha);
    }
    return sha;
  }

  private async writeChunkFile(sha: string, data: Buffer): Promise<void> {
    const dir = dirname(this.chunkPath(sha));
    // A new prefix directory must itself be durable, or the chunk inside could vanish on a crash.
    if (!this.prefixes.has(dir)) {
      if ((await mkdir(dir, { recursive: true })) !== undefined)
        await fsyncDirectory(join(this.root, "chunks"));
      this.prefixes.add(dir);
    }
    // Its directory entry is made durable when an image record names it (see record).
    await this.writeDurably(this.chunkPath(sha), data, 0o444, { syncDirectory: false });
  }

  /**
   * tmp file, fsync, rename into place, fsync the directory: the file is whole and durable, or
   * absent. Without `syncDirectory`, a crash may lose the name (never leave a partial file).
   */
  private async writeDurably(
    path: string,
    data: Buffer,
    mode: number,
    { syncDirectory = true } = {},
  ): Promise<void> {
    const tmp = join(this.root, "tmp", `${process.pid}-${randomUUID()}`);
    this.activeTmp.add(tmp);
    try {
      const file = await open(tmp, "wx", mode);
      try {
        // One write call for the whole buffer (writeFile would split it into 512 KiB writes).
        for (let at = 0; at < data.length;) at += (await file.write(data, at, data.length - at)).bytesWritten;
        await file.sync();
      } finally {
        await file.close();
      }
      await rename(tmp, path);
      if (syncDirectory) await fsyncDirectory(dirname(path));
    } catch (e) {
      await unlink(tmp).catch(() => undefined);
      throw e;
    } finally {
      this.activeTmp.delete(tmp);
    }
  }

  private async pin(sha: string, op: Operation): Promise<void> {
    this.pins.set(sha, (this.pins.get(sha) ?? 0) + 1);
    op.pinned.push(sha);
    // A delete that started before the pin finishes first; the caller then sees the chunk absent.
    await this.deleting.get(sha);
  }

  private unpin(op: Operation): void {
    for (const sha of op.pinned.splice(0)) {
      const n = (this.pins.get(sha) ?? 1) - 1;
      if (n === 0) this.pins.delete(sha);
      else this.pins.set(sha, n);
    }
  }

  /** Unlinks a chunk no record names and no operation pins. The check and the start are synchronous. */
  private async removeIfUnused(sha: string): Promise<boolean> {
    if (this.refs.has(sha) || this.pins.has(sha) || this.deleting.has(sha)) return false;
    const removal = unlink(this.chunkPath(sha)).then(
      () => true,
      () => false,
    );
    this.deleting.set(sha, removal);
    try {
      return await removal;
    } finally {
      this.deleting.delete(sha);
    }
  }

  private count(entry: ImageEntry, delta: 1 | -1): void {
    for (const { sha256 } of entry.chunks) {
      const n = (this.refs.get(sha256) ?? 0) + delta;
      if (n <= 0) this.refs.delete(sha256);
      else this.refs.set(sha256, n);
    }
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** The records, loaded once: creates the layout and reads every images/*.json. */
  private index(): Promise<Map<string, ImageEntry>> {
    this.loaded ??= this.load();
    return this.loaded;
  }

  private async load(): Promise<Map<string, ImageEntry>> {
    for (const dir of ["chunks", "images", "tmp"]) await mkdir(join(this.root, dir), { recursive: true });
    const index = new Map<string, ImageEntry>();
    for (const name of await readdir(join(this.root, "images"))) {
      const match = /^([0-9a-f]{64})\.json$/.exec(name);
      if (match === null) continue;
      const entry = parseRecord(
        await readFile(join(this.root, "images", name), "utf8"),
        match[1],
        this.recordPath(match[1]),
      );
      index.set(match[1], freeze(entry));
      this.count(entry, +1);
    }
    return index;
  }

  private chunkPath(sha: string): string {
    return join(this.root, "chunks", sha.slice(0, 2), sha);
  }

  private recordPath(hex: string): string {
    return join(this.root, "images", `${hex}.json`);
  }
}

/** Cuts a byte stream into fixed-size chunks, handing each to `keep` as it fills. */
class ChunkCutter {
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

/** A deep-frozen copy with the record's fields only, as the index keeps and hands out. */
function freeze(entry: ImageEntry): ImageEntry {
  return Object.freeze({
    digest: entry.digest,
    manifest: deepFreeze(entry.manifest),
    sizeBytes: entry.sizeBytes,
    chunks: Object.freeze(
      entry.chunks.map((c) => Object.freeze({ sha256: c.sha256, size: c.size })),
    ) as ChunkRef[],
  });
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

function newOperation(): Operation {
  return { pinned: [], created: new Set() };
}

function checkName(manifest: Manifest, name: string | undefined): void {
  if (name !== undefined && name !== "" && manifest.name !== name) {
    throw invalid(
      `the archive's manifest names the image ${show(manifest.name)}, but ${show(name)} was expected; ` +
        `send the right archive or fix the name.`,
    );
  }
}

/** A chunk list given as input, checked: not empty, sha256 names, sizes 1 to MAX_CHUNK_BYTES. */
export function checkChunkList(digest: string, chunks: readonly ChunkRef[]): ChunkRef[] {
  if (!Array.isArray(chunks) || chunks.length === 0) {
    throw invalid(`the chunk list of image ${digest} is empty; pass every chunk of the archive, in order.`);
  }
  return chunks.map((c, i) => {
    checkChunkSha(c?.sha256, `chunk #${i} of image ${digest}`);
    if (!Number.isInteger(c.size) || c.size < 1 || c.size > MAX_CHUNK_BYTES) {
      throw invalid(
        `chunk #${i} of image ${digest} has size ${show(c.size)}; expected 1 to ${MAX_CHUNK_BYTES} bytes.`,
      );
    }
    return { sha256: c.sha256, size: c.size };
  });
}

/** An image record read back from disk; DATA_LOSS (naming the file) when it is not one. */
function parseRecord(text: string, hex: string, path: string): ImageEntry {
  const corrupt = (why: string): Error =>
    dataLoss(
      `image record ${show(path)} is corrupt (${why}); delete it and upload or transfer the image again.`,
    );
  let value: Record<string, unknown>;
  try {
    value = JSON.parse(text) as Record<string, unknown>;
  } catch (e) {
    throw corrupt((e as Error).message);
  }
  if (value?.digest !== `sha256:${hex}`)
    throw corrupt(`its digest ${show(value?.digest)} does not match its file name`);
  let manifest: Manifest;
  try {
    manifest = assertManifest(value.manifest, "its manifest");
  } catch (e) {
    throw corrupt((e as Error).message);
  }
  const chunks = value.chunks;
  if (!Array.isArray(chunks) || chunks.length === 0) throw corrupt("it has no chunk list");
  let total = 0;
  for (const c of chunks as ChunkRef[]) {
    if (!SHA256_HEX_PATTERN.test(String(c?.sha256)) || !Number.isInteger(c?.size) || c.size < 1) {
      throw corrupt(`chunk ${show(c?.sha256)} has no valid name or size`);
    }
    total += c.size;
  }
  if (value.sizeBytes !== total)
    throw corrupt(`sizeBytes ${show(value.sizeBytes)} is not the sum of its chunk sizes`);
  return { digest: value.digest, manifest, sizeBytes: total, chunks: chunks as ChunkRef[] };
}

async function fsyncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
