/**
 * Packing a directory into an image archive, reproducibly, after applying the reader's rules to
 * it up front so that nothing packed is refused on reading.
 */

import { createReadStream, createWriteStream } from "fs";
import { lstat, readdir, readlink, realpath, stat, unlink } from "fs/promises";
import { join } from "path";
import type { Writable } from "stream";
import { pipeline } from "stream/promises";
import * as tar from "tar-stream";
import { GciError, invalid, notFound, precondition } from "../common/errors";
import { Meter, show } from "../common/digest";
import { MANIFEST_NAME, type Manifest, assertManifest, referencedPaths, serializeManifest } from "./manifest";
import { entryPath } from "./paths";
import { normalMode } from "./reader";
import { type Sink, drained, flowing, isStopped } from "./streams";
import { ImageTree } from "./tree";
import type { PackResult } from "./types";

type TarHeaderArgument = Parameters<tar.Pack["entry"]>[0];
const EPOCH = new Date(0);

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
      // The pack's own error is the one to report. If the partial file stays (unlink failed) it is
      // still no image: readImage refuses an archive without its end-of-archive marker.
      await unlink(out).catch(() => undefined);
    }
    throw GciError.isInstance(e) || writeError === undefined ? e : writeError;
  }
  return { digest: meter.digest(), sizeBytes: meter.bytes };
}

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
  done.catch(() => undefined); // awaited below, after the copy; this only keeps an early failure from being "unhandled"
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
