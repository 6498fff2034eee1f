/**
 * Extraction of an image archive into a directory, for the VM drivers. The archive is checked
 * completely before anything is written, then extracted while being checked again; writing
 * never follows a symlink, so even an archive that changed between the passes cannot place a
 * file outside the destination.
 */

import { constants } from "fs";
import { link, lstat, mkdir, open, readdir, realpath, rm, symlink } from "fs/promises";
import { basename, join, sep } from "path";
import { invalid, precondition } from "../common/errors";
import { show } from "../common/digest";
import { type ArchiveEntry, type ImageInfo, readImage, validateArchive } from "./format";

/** Options of extractImage. */
export interface ExtractImageOptions {
  /** Refuse the archive with DATA_LOSS unless its sha256 is this digest. @default no check */
  readonly expectedDigest?: string;
}

const WRITE_NEW_FILE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/**
 * Extracts the image at `archivePath` into `destDir` (created if missing, and it must be
 * empty). On failure, everything it wrote in `destDir` is removed again.
 */
export async function extractImage(
  archivePath: string,
  destDir: string,
  options: ExtractImageOptions = {},
): Promise<ImageInfo> {
  // First pass: the disk is not touched until the whole archive is known to be good.
  const checked = await validateArchive(archivePath, options);
  const root = await emptyDirectory(destDir);
  try {
    // Second pass, pinned to the same bytes, since the file could have changed in between.
    return await readImage(archivePath, {
      expectedDigest: checked.digest,
      onEntry: (entry, data) => writeEntry(root, entry, data),
    });
  } catch (e) {
    await clear(root);
    throw e;
  }
}

/** Creates (if need be) and resolves the destination; refuses one that holds anything. */
async function emptyDirectory(destDir: string): Promise<string> {
  await mkdir(destDir, { recursive: true, mode: 0o755 });
  const root = await realpath(destDir);
  if ((await readdir(root)).length > 0) {
    throw precondition(
      `extraction directory ${show(destDir)} is not empty; extract into a new or empty directory, so ` +
        `no earlier file or link mixes with the image.`,
    );
  }
  return root;
}

async function writeEntry(root: string, entry: ArchiveEntry, data: AsyncIterable<Buffer>): Promise<void> {
  const target = join(await safeParent(root, entry.path), basename(entry.path));
  switch (entry.type) {
    case "directory":
      return makeDirectory(target, entry);
    case "file":
      return writeFile(target, entry, data);
    case "symlink":
      return symlink(entry.linkTarget ?? "", target);
    case "link":
      return hardlink(root, entry, target);
  }
}

/**
 * The real path of an entry's parent directory, creating missing directories on the way and
 * refusing any component that is not a real directory (a symlink could point anywhere).
 */
async function safeParent(root: string, path: string): Promise<string> {
  const parts = path.split("/").slice(0, -1);
  let dir = root;
  for (let i = 0; i < parts.length; i++) {
    dir = join(dir, parts[i]);
    const st = await lstat(dir).catch((e: NodeJS.ErrnoException) => {
      if (e.code === "ENOENT") return undefined;
      throw e;
    });
    if (st === undefined) {
      await mkdir(dir, { mode: 0o755 });
    } else if (!st.isDirectory()) {
      const what = st.isSymbolicLink() ? "a symlink" : "not a directory";
      throw invalid(
        `refusing to extract ${show(path)}: ${show(parts.slice(0, i + 1).join("/"))} in ${show(root)} is ` +
          `${what}, and writing through it could leave the destination. Extract into an empty directory.`,
      );
    }
  }
  // Belt and braces: with no symlink on the way, the parent resolves inside the root.
  const real = await realpath(dir);
  if (real !== root && !real.startsWith(root + sep)) {
    throw invalid(
      `refusing to extract ${show(path)}: its directory resolves to ${show(real)}, outside ${show(root)}.`,
    );
  }
  return real;
}

async function makeDirectory(target: string, entry: ArchiveEntry): Promise<void> {
  try {
    await mkdir(target, { mode: entry.mode });
  } catch (e) {
    // Already created as the parent of an earlier entry; fine if it is a real directory.
    if ((e as NodeJS.ErrnoException).code !== "EEXIST" || !(await lstat(target)).isDirectory()) throw e;
  }
}

async function writeFile(target: string, entry: ArchiveEntry, data: AsyncIterable<Buffer>): Promise<void> {
  // O_EXCL|O_NOFOLLOW: never write into something that already exists, least of all through a link.
  const file = await open(target, WRITE_NEW_FILE, entry.mode);
  try {
    for await (const part of data) {
      for (let offset = 0; offset < part.length;) {
        offset += (await file.write(part, offset)).bytesWritten;
      }
    }
    await file.chmod(entry.mode); // the umask may have narrowed the mode given to open
  } finally {
    await file.close();
  }
}

async function hardlink(root: string, entry: ArchiveEntry, target: string): Promise<void> {
  const linked = entry.linkTarget ?? "";
  const source = join(await safeParent(root, linked), basename(linked));
  if (!(await lstat(source)).isFile()) {
    throw invalid(`refusing to extract hardlink ${show(entry.path)}: ${show(linked)} is not a regular file.`);
  }
  await link(source, target);
}

/** Removes everything in the root (rm does not follow symlinks). */
async function clear(root: string): Promise<void> {
  // Runs only while another error is being reported, and that error is the one to report. The
  // root was created and resolved moments ago: readdir fails only if it was removed meanwhile
  // (nothing left to clear) or made unreadable by someone else. What stays is never used as an
  // image: the daemon marks an extraction complete only after extractImage resolves, and removes
  // an unmarked directory before extracting into it again (provider/cluster/instances.ts, imageDir).
  const names = await readdir(root).catch(() => [] as string[]);
  await Promise.all(names.map((name) => rm(join(root, name), { recursive: true, force: true })));
}
