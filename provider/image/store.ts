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

import { mkdir, readFile, readdir, stat, unlink, utimes } from "fs/promises";
import { dirname, join } from "path";
import { Readable } from "stream";
import { GciError, dataLoss, invalid, notFound, precondition } from "../common/errors";
import { SHA256_HEX_PATTERN, checkChunkSha, checkDigest, sha256Hex, show } from "../common/digest";
import { type ArchiveSource, readImage } from "./format";
import { ChunkCutter, ChunkLedger, type Operation, newOperation } from "./store-chunks";
import { fsyncDirectory, sweepTmp, writeDurably } from "./store-durable";
import { checkChunkList, checkName, freeze, parseRecord } from "./store-record";
import {
  CHUNK_SIZE,
  type ChunkRef,
  type CommitImageOptions,
  GC_GRACE_MS,
  type GcOptions,
  type GcResult,
  type ImageEntry,
  type ImageStoreOptions,
  type IngestOptions,
  MAX_CHUNK_BYTES,
} from "./store-types";

/** A content-addressed store of images under one root directory. */
export class ImageStore {
  readonly root: string;
  readonly chunkSize: number;
  private loaded?: Promise<Map<string, ImageEntry>>;
  /** Which chunks records name and operations pin; what may be removed. */
  private readonly ledger = new ChunkLedger();
  /** Temporary files of writes in flight, which gc leaves alone. */
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
      this.ledger.unpin(op);
      await Promise.all([...op.created].map((sha) => this.removeIfUnused(sha)));
      throw e;
    } finally {
      this.ledger.unpin(op);
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
      this.ledger.count(entry, -1);
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
        if (this.ledger.isReferenced(sha) || options.keep?.has(sha)) continue;
        // A chunk gone since the listing (removed by a failed operation's clean-up) is skipped.
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
      const tmpFilesRemoved = await sweepTmp(join(this.root, "tmp"), this.activeTmp, now, grace);
      return { chunksRemoved, bytesFreed, tmpFilesRemoved, chunksYoung };
    });
  }

  /** Whether the store holds the chunk (as a file; readChunk verifies it). */
  async hasChunk(sha256: string): Promise<boolean> {
    checkChunkSha(sha256);
    // Any stat failure (ENOENT above all) means the chunk is not there to use: the caller writes
    // or fetches it, and readChunk reports a file that is there but unreadable.
    return (await stat(this.chunkPath(sha256)).catch(() => undefined))?.isFile() === true;
  }

  /** The sha256 hex of every chunk the store holds, referenced or not. */
  async listChunks(): Promise<Set<string>> {
    await this.index();
    const held = new Set<string>();
    const top = join(this.root, "chunks");
    for (const prefix of await readdir(top)) {
      if (!/^[0-9a-f]{2}$/.test(prefix)) continue;
      // A prefix entry that is not a readable directory holds no chunk of the store's.
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
      await this.ledger.pin(sha256, op);
      if (await this.hasChunk(sha256)) {
        // Refresh its age, so gc's grace period protects a chunk a transfer is about to commit.
        const now = new Date();
        // Best effort: the chunk is there and verified; at worst the grace period starts earlier.
        await utimes(this.chunkPath(sha256), now, now).catch(() => undefined);
        return;
      }
      await this.writeChunkFile(sha256, bytes);
    } finally {
      this.ledger.unpin(op);
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
      for (const ref of refs) await this.ledger.pin(ref.sha256, op);
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
      this.ledger.unpin(op);
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
      this.ledger.count(body, +1);
      return body;
    });
  }

  /** Stores one chunk of an ingest (unless the store has it) and pins it for the operation. */
  private async keepChunk(data: Buffer, op: Operation): Promise<string> {
    const sha = sha256Hex(data);
    await this.ledger.pin(sha, op);
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

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    // The caller gets `run`'s failure; the queue only waits for it, so the next one still runs.
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
      this.ledger.count(entry, +1);
    }
    return index;
  }

  private chunkPath(sha: string): string {
    return join(this.root, "chunks", sha.slice(0, 2), sha);
  }

  private recordPath(hex: string): string {
    return join(this.root, "images", `${hex}.json`);
  }

  /** Unlinks a chunk no record names and no operation pins (see ChunkLedger.removeIfUnused). */
  private removeIfUnused(sha: string): Promise<boolean> {
    return this.ledger.removeIfUnused(sha, this.chunkPath(sha));
  }

  /** writeDurably in this store's tmp folder, the file tracked as active while it is written. */
  private writeDurably(
    path: string,
    data: Buffer,
    mode: number,
    opts?: { syncDirectory?: boolean },
  ): Promise<void> {
    return writeDurably(join(this.root, "tmp"), this.activeTmp, path, data, mode, opts);
  }
}
