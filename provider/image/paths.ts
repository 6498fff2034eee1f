/**
 * Path rules for image archives, and a model of the tree an archive would create. The model
 * lets the reader judge links the way the kernel will once the image is extracted: a symlink
 * chain can leave the root even when every link looks harmless on its own (y -> ".", x -> "y/..").
 * @internal
 */

import { invalid } from "../errors";
import { show } from "./digest";

/** Longest path accepted for one entry, in UTF-8 bytes (Linux's PATH_MAX). */
export const MAX_PATH_BYTES = 4096;
/** Links followed while resolving one path before it is called a loop (Linux's limit). */
const MAX_LINK_HOPS = 40;

/** What an entry is once extracted; hardlinks ("link") always name an earlier regular file. */
export type EntryKind = "file" | "directory" | "symlink" | "link";

/** Where a path leads once symlinks inside the image are followed. */
export type Resolution = { kind: "inside"; path: string } | { kind: "escapes" } | { kind: "loop" };

const HOW_TO_REPACK = "Re-pack the image with packDirectory, which never writes such entries.";

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

interface Node {
  /** "implicit" marks a directory only known as the parent of a later entry. */
  readonly kind: EntryKind | "implicit";
  readonly target?: string;
}

/** The tree an archive describes, built entry by entry; each add() enforces the rules that need history. */
export class ImageTree {
  private readonly nodes = new Map<string, Node>();
  private readonly symlinks = new Map<string, string>();

  /** @param fix how to repair the input, appended to every message (differs for reading and packing). */
  constructor(private readonly fix: string = HOW_TO_REPACK) {}

  /**
   * Records an entry (canonical path); throws INVALID_ARGUMENT naming the entry when it clashes.
   * Returns the link target as kept: as written for symlinks, canonical for hardlinks.
   */
  add(path: string, kind: EntryKind, target?: string): string | undefined {
    this.checkNotSeen(path, kind);
    this.checkParents(path);
    let stored = target;
    if (kind === "symlink") this.checkSymlink(path, target ?? "");
    if (kind === "link") stored = this.checkHardlink(path, target ?? "");
    this.nodes.set(path, { kind, target: stored });
    if (kind === "symlink") this.symlinks.set(path, stored ?? "");
    return stored;
  }

  /** The kind of a recorded entry, if any. */
  kindOf(path: string): EntryKind | "implicit" | undefined {
    return this.nodes.get(path)?.kind;
  }

  /** Follows symlinks of the image along `path`, as path lookup in the extracted tree would. */
  resolve(path: string): Resolution {
    const pending = path.split("/").reverse();
    const done: string[] = [];
    let hops = 0;
    while (pending.length > 0) {
      const part = pending.pop() as string;
      if (part === "" || part === ".") continue;
      if (part === "..") {
        if (done.length === 0) return { kind: "escapes" };
        done.pop();
        continue;
      }
      done.push(part);
      const target = this.symlinks.get(done.join("/"));
      if (target === undefined) continue;
      if (++hops > MAX_LINK_HOPS) return { kind: "loop" };
      done.pop();
      // Absolute targets were refused in add(); treat one as escaping all the same.
      if (target.startsWith("/")) return { kind: "escapes" };
      pending.push(...target.split("/").reverse());
    }
    return { kind: "inside", path: done.join("/") };
  }

  /** Once the whole archive is known: no symlink may lead outside the root through other links. */
  checkSymlinkChains(): void {
    for (const [link, target] of this.symlinks) {
      const where = this.resolve(link);
      if (where.kind === "escapes") {
        throw invalid(
          `symlink ${show(link)} -> ${show(target)} leads outside the image root once the symlinks it ` +
            `passes through are followed; make every link point inside the image. ${this.fix}`,
        );
      }
      if (where.kind === "loop") {
        throw invalid(
          `symlink ${show(link)} -> ${show(target)} does not resolve within ${MAX_LINK_HOPS} links (a loop); ` +
            `break the loop and pack again.`,
        );
      }
    }
  }

  /** Every file the manifest names must be a regular file of the archive (symlinks followed). */
  checkReferences(refs: readonly { readonly field: string; readonly path: string }[]): void {
    const missing: string[] = [];
    for (const { field, path } of refs) {
      const where = this.resolve(path);
      const kind = where.kind === "inside" ? this.kindOf(where.path) : undefined;
      if (kind !== "file" && kind !== "link") {
        const found =
          kind === undefined ? "which is not in the archive" : `which is a ${kind}, not a regular file`;
        missing.push(`field "${field}" names ${show(path)}, ${found}`);
      }
    }
    if (missing.length > 0) {
      throw invalid(
        `manifest.json refers to files the image lacks: ${missing.join("; ")}. ` +
          `Add the files to the image directory or fix the manifest, then pack again.`,
      );
    }
  }

  private checkNotSeen(path: string, kind: EntryKind): void {
    const earlier = this.nodes.get(path);
    if (earlier === undefined) return;
    if (earlier.kind === "implicit") {
      if (kind === "directory") return;
      throw invalid(
        `entry ${show(path)} is a ${kind}, but earlier entries are inside it as a directory. ${this.fix}`,
      );
    }
    throw invalid(
      `entry ${show(path)} appears twice in the archive (a ${earlier.kind}, then a ${kind}); ` +
        `each path may appear once, or what is extracted depends on the tool. ${this.fix}`,
    );
  }

  /** Parents must be directories: writing under a symlink would write wherever it points. */
  private checkParents(path: string): void {
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join("/");
      const node = this.nodes.get(parent);
      if (node === undefined) {
        this.nodes.set(parent, { kind: "implicit" });
      } else if (node.kind !== "directory" && node.kind !== "implicit") {
        throw invalid(
          `entry ${show(path)} lies under ${show(parent)}, which is a ${node.kind}, not a directory; ` +
            `extracting it would write through that ${node.kind}. ${this.fix}`,
        );
      }
    }
  }

  private checkSymlink(path: string, target: string): void {
    const link = `symlink ${show(path)} -> ${show(target)}`;
    if (target === "" || target.includes("\0")) {
      throw invalid(`${link} has an empty target or a NUL byte in it. ${this.fix}`);
    }
    if (target.startsWith("/")) {
      throw invalid(
        `${link} has an absolute target, which leaves the image root once extracted; ` +
          `symlinks must be relative and stay inside the image. ${this.fix}`,
      );
    }
    // A first, local check (chains through other links are checked once all entries are known).
    const depth = path.split("/").length - 1;
    let level = depth;
    for (const part of target.split("/")) {
      if (part === "..") level--;
      else if (part !== "" && part !== ".") level++;
      if (level < 0) {
        throw invalid(
          `${link} leaves the image root: symlinks must be relative and stay inside the image. ${this.fix}`,
        );
      }
    }
  }

  private checkHardlink(path: string, target: string): string {
    const link = `hardlink ${show(path)} -> ${show(target)}`;
    const parts = target.split("/").filter((p) => p !== "" && p !== ".");
    if (target.startsWith("/") || parts.includes("..") || target.includes("\0")) {
      throw invalid(
        `${link} leaves the image root: hardlink targets must be relative paths without ".." ` +
          `that name an earlier file of the image. ${this.fix}`,
      );
    }
    const canonical = parts.join("/");
    const kind = this.nodes.get(canonical)?.kind;
    if (kind !== "file" && kind !== "link") {
      throw invalid(
        `${link} does not name an earlier regular file of the archive (found: ${kind ?? "nothing"}); ` +
          `hardlinks may only join regular files. ${this.fix}`,
      );
    }
    return canonical;
  }
}
