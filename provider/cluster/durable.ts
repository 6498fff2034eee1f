/**
 * Making files on disk durable before they are relied on: a power loss after a rename may
 * otherwise keep the new name with empty or partial contents (ext4, xfs). An extracted image
 * is marked complete only after every file and directory in it reached the disk.
 */

import { open, readdir, rename } from "fs/promises";
import * as path from "path";

/** fsync of one file or directory. */
async function syncPath(target: string): Promise<void> {
  const handle = await open(target, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** fsyncs every regular file and directory under `dir` (contents before their directory), and `dir`. */
export async function syncTree(dir: string): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const child = path.join(dir, entry.name);
    if (entry.isDirectory()) await syncTree(child);
    else if (entry.isFile()) await syncPath(child);
    // Symlinks and devices have no data to flush; their directory entry is synced below.
  }
  await syncPath(dir);
}

/** Writes `file` so that after a crash it is either absent or whole: temp file, fsync, rename, fsync of the directory. */
export async function writeFileDurably(file: string, data: string): Promise<void> {
  const temporary = `${file}.${process.pid}.tmp`;
  const handle = await open(temporary, "w", 0o644);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temporary, file);
  await syncPath(path.dirname(file));
}
