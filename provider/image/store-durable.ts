/**
 * Durable writes of the image store: a file is whole and fsync'd under its name, or absent; and
 * the sweep of temporary files that a crash (or a failed write) left behind.
 */

import { randomUUID } from "crypto";
import { open, readdir, rename, stat, unlink } from "fs/promises";
import { dirname, join } from "path";

/**
 * tmp file, fsync, rename into place, fsync the directory: the file is whole and durable, or
 * absent. Without `syncDirectory`, a crash may lose the name (never leave a partial file).
 * The tmp file is in `active` while it is written, so sweepTmp leaves it alone.
 */
export async function writeDurably(
  tmpDir: string,
  active: Set<string>,
  path: string,
  data: Buffer,
  mode: number,
  { syncDirectory = true } = {},
): Promise<void> {
  const tmp = join(tmpDir, `${process.pid}-${randomUUID()}`);
  active.add(tmp);
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
    // The write's own error is the one reported; a tmp file left over is swept by gc later.
    await unlink(tmp).catch(() => undefined);
    throw e;
  } finally {
    active.delete(tmp);
  }
}

/** Removes the files in `tmpDir` older than `graceMs` that no write in flight (`active`) uses; how many. */
export async function sweepTmp(
  tmpDir: string,
  active: ReadonlySet<string>,
  now: number,
  graceMs: number,
): Promise<number> {
  let removed = 0;
  for (const name of await readdir(tmpDir)) {
    const path = join(tmpDir, name);
    // A file gone since the listing (its write renamed it into place) is not stale.
    const st = await stat(path).catch(() => undefined);
    if (active.has(path) || st === undefined || now - st.mtimeMs < graceMs) continue;
    // Losing a race with another remover is harmless: the file is gone either way.
    await unlink(path).catch(() => undefined);
    removed++;
  }
  return removed;
}

/** fsync of a directory, so the names created or removed in it are durable. */
export async function fsyncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
