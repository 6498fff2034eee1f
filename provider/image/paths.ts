/**
 * Path rules for image archives: what one entry's path or a manifest's path may be, and the
 * limits that bound what checking one archive holds and walks. The tree an archive describes,
 * which judges links across entries, is in tree.ts (its node table in path-table.ts).
 * @internal
 */

import { invalid } from "../common/errors";
import { show } from "../common/digest";

/** Longest path accepted for one entry, in UTF-8 bytes (Linux's PATH_MAX). */
export const MAX_PATH_BYTES = 4096;
/**
 * Paths one archive may describe: its entries and the directories they lie in. Bounds what the
 * reader holds per archive (about 100 bytes a path); a large root file system has ~100,000.
 */
export const MAX_PATHS = 1_000_000;
/** Bytes of entry paths and link targets one archive may have in all; bounds the work of checking them. */
export const MAX_TOTAL_PATH_BYTES = 64 * 1024 * 1024;
/**
 * Path components one archive's symlink resolution may walk in all (each link's target counts
 * each time a path passes through it). Bounds that synchronous pass; a root file system with
 * tens of thousands of links walks a few hundred thousand.
 */
export const MAX_LINK_WALK = 4_000_000;

/** What an entry is once extracted; hardlinks ("link") always name an earlier regular file. */
export type EntryKind = "file" | "directory" | "symlink" | "link";

/** The fix appended to messages about a read archive's entries. */
export const HOW_TO_REPACK = "Re-pack the image with packDirectory, which never writes such entries.";

/** Why a manifest path is not a canonical image path ("boot/vmlinuz"), or undefined if it is. */
export function checkImagePath(path: string): string | undefined {
  if (path.length === 0) return `is empty; name a file inside the image, e.g. "boot/vmlinuz"`;
  if (path.includes("\0")) return "contains a NUL byte";
  if (path.startsWith("/")) return `is absolute; write it relative to the image root, e.g. "boot/vmlinuz"`;
  const parts = path.split("/");
  if (parts.includes("..")) return `has a ".." component; name a file inside the image`;
  if (parts.some((p) => p === "" || p === ".")) {
    return `is not canonical: drop empty and "." components and any trailing "/"`;
  }
  if (Buffer.byteLength(path) > MAX_PATH_BYTES) return `is longer than ${MAX_PATH_BYTES} bytes`;
  return undefined;
}

/**
 * The canonical path of a tar entry name ("./boot/" -> "boot"; "" for the root itself), or an
 * INVALID_ARGUMENT error naming the entry and the rule it breaks.
 */
export function entryPath(name: string): string {
  if (name.includes("\0")) throw invalid(`entry ${show(name)} has a NUL byte in its path. ${HOW_TO_REPACK}`);
  if (name.startsWith("/")) {
    throw invalid(
      `entry ${show(name)} has an absolute path: image paths must be relative to the image root, ` +
        `so nothing is written outside it. ${HOW_TO_REPACK}`,
    );
  }
  const parts = name.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) {
    throw invalid(
      `entry ${show(name)} has a ".." path component, which could write outside the image root. ${HOW_TO_REPACK}`,
    );
  }
  const path = parts.join("/");
  if (Buffer.byteLength(path) > MAX_PATH_BYTES) {
    throw invalid(`entry ${show(name)} has a path longer than ${MAX_PATH_BYTES} bytes. ${HOW_TO_REPACK}`);
  }
  return path;
}
