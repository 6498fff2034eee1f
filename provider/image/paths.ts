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

/** The root directory's id in the tree. */
const ROOT = 0;

/**
 * The tree an archive describes, built entry by entry; each add() enforces the rules that need
 * history. Each path is a node keyed by its parent's id and its own name, so what the tree holds
 * grows with the number of paths, not with their depth times their length (a 4,000-byte path
 * once cost every one of its prefixes in full), and both are bounded: MAX_PATHS and
 * MAX_TOTAL_PATH_BYTES.
 */
export class ImageTree {
  private readonly table = new PathTable();
  /** Link target by id: symlinks as written, hardlinks canonical. */
  private readonly targets = new Map<number, string>();
  /** Path by id, for symlinks only (the chain check resolves each once the archive is known). */
  private readonly symlinks = new Map<number, string>();
  private pathBytes = 0;
  /** Components resolve() has walked so far, over all its calls. */
  private walked = 0;

  /** @param fix how to repair the input, appended to every message (differs for reading and packing). */
  constructor(private readonly fix: string = HOW_TO_REPACK) {}

  /**
   * Records an entry (canonical path); throws INVALID_ARGUMENT naming the entry when it clashes
   * or passes a limit. Returns the link target as kept: as written for symlinks, canonical for hardlinks.
   */
  add(path: string, kind: EntryKind, target?: string): string | undefined {
    this.countPathBytes(path, target);
    const parts = path.split("/");
    const parent = this.parentOf(path, parts);
    const name = parts[parts.length - 1];
    const earlier = this.table.child(parent, name);
    this.checkNotSeen(path, kind, earlier);
    let stored = target;
    if (kind === "symlink") this.checkSymlink(path, target ?? "");
    if (kind === "link") stored = this.checkHardlink(path, target ?? "");
    const id = earlier ?? this.newNode(parent, name, path);
    this.table.setKind(id, kind);
    if (kind === "symlink" || kind === "link") this.targets.set(id, stored ?? "");
    if (kind === "symlink") this.symlinks.set(id, path);
    return stored;
  }

  /** The kind of a recorded entry (or implied directory), if any; symlinks are not followed. */
  kindOf(path: string): EntryKind | "implicit" | undefined {
    const id = this.lookup(path);
    return id === undefined ? undefined : this.table.kind(id);
  }

  /** Follows symlinks of the image along `path`, as path lookup in the extracted tree would. */
  resolve(path: string): Resolution {
    const pending = path.split("/").reverse();
    const names: string[] = [];
    // The node of each name in `names`; undefined once the path leaves what the archive holds.
    const ids: (number | undefined)[] = [];
    let hops = 0;
    while (pending.length > 0) {
      const part = pending.pop() as string;
      this.countWalk(path);
      if (part === "" || part === ".") continue;
      if (part === "..") {
        if (names.length === 0) return { kind: "escapes" };
        names.pop();
        ids.pop();
        continue;
      }
      const parent = ids.length === 0 ? ROOT : ids[ids.length - 1];
      const id = parent === undefined ? undefined : this.table.child(parent, part);
      const target = id !== undefined && this.table.kind(id) === "symlink" ? this.targets.get(id) : undefined;
      if (target === undefined) {
        names.push(part);
        ids.push(id);
        continue;
      }
      if (++hops > MAX_LINK_HOPS) return { kind: "loop" };
      // Absolute targets were refused in add(); treat one as escaping all the same.
      if (target.startsWith("/")) return { kind: "escapes" };
      pending.push(...target.split("/").reverse());
    }
    return { kind: "inside", path: names.join("/") };
  }

  /**
   * The canonical path of the regular file a manifest path names, symlinks and hardlinks
   * followed, or undefined when it names none (checkReferences says why).
   */
  fileBehind(path: string): string | undefined {
    const where = this.resolve(path);
    if (where.kind !== "inside") return undefined;
    const id = this.lookup(where.path);
    if (id === undefined) return undefined;
    if (this.table.kind(id) === "file") return where.path;
    return this.table.kind(id) === "link" ? this.targets.get(id) : undefined;
  }

  /** Once the whole archive is known: no symlink may lead outside the root through other links. */
  checkSymlinkChains(): void {
    for (const [id, link] of this.symlinks) {
      const target = this.targets.get(id) ?? "";
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

  /** The node of a path, exactly as written (no symlinks followed), if the archive has it. */
  private lookup(path: string): number | undefined {
    if (path === "") return ROOT;
    let id: number | undefined = ROOT;
    for (const part of path.split("/")) {
      id = this.table.child(id, part);
      if (id === undefined) return undefined;
    }
    return id;
  }

  /** Parents must be directories: writing under a symlink would write wherever it points. */
  private parentOf(path: string, parts: readonly string[]): number {
    let id = ROOT;
    for (let i = 0; i < parts.length - 1; i++) {
      const found = this.table.child(id, parts[i]);
      if (found === undefined) {
        id = this.newNode(id, parts[i], path);
        continue;
      }
      const kind = this.table.kind(found);
      if (kind !== "directory" && kind !== "implicit") {
        const parent = parts.slice(0, i + 1).join("/");
        throw invalid(
          `entry ${show(path)} lies under ${show(parent)}, which is a ${kind}, not a directory; ` +
            `extracting it would write through that ${kind}. ${this.fix}`,
        );
      }
      id = found;
    }
    return id;
  }

  /** A new node (an implied directory until add() says otherwise), within MAX_PATHS. */
  private newNode(parent: number, name: string, entry: string): number {
    if (this.table.size > MAX_PATHS) {
      throw invalid(
        `entry ${show(entry, 80)} takes the archive past its limit of ${MAX_PATHS} paths (its entries ` +
          `and the directories they lie in), which bounds what checking an image holds in memory. ` +
          `Split the files into several images, or flatten deep directory trees.`,
      );
    }
    return this.table.add(parent, name);
  }

  /** Symlink resolution, over the whole archive, walks at most MAX_LINK_WALK components. */
  private countWalk(path: string): void {
    if (++this.walked <= MAX_LINK_WALK) return;
    throw invalid(
      `resolving the archive's symlinks walks more than ${MAX_LINK_WALK} path components (at ${show(path, 80)}), ` +
        `the limit that bounds the work of checking an image: use shorter link targets and fewer links ` +
        `in a row.`,
    );
  }

  /** Entry paths and link targets together stay within MAX_TOTAL_PATH_BYTES. */
  private countPathBytes(path: string, target: string | undefined): void {
    this.pathBytes += Buffer.byteLength(path) + (target === undefined ? 0 : Buffer.byteLength(target));
    if (this.pathBytes > MAX_TOTAL_PATH_BYTES) {
      throw invalid(
        `entry ${show(path, 80)} takes the archive past its limit of ${MAX_TOTAL_PATH_BYTES} bytes ` +
          `(64 MiB) of paths and link targets, which bounds the work of checking an image. ` +
          `Split the files into several images, or use shorter paths.`,
      );
    }
  }

  private checkNotSeen(path: string, kind: EntryKind, id: number | undefined): void {
    if (id === undefined) return;
    const earlier = this.table.kind(id);
    if (earlier === "implicit") {
      if (kind === "directory") return;
      throw invalid(
        `entry ${show(path)} is a ${kind}, but earlier entries are inside it as a directory. ${this.fix}`,
      );
    }
    throw invalid(
      `entry ${show(path)} appears twice in the archive (a ${earlier}, then a ${kind}); ` +
        `each path may appear once, or what is extracted depends on the tool. ${this.fix}`,
    );
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
    const kind = this.kindOf(canonical);
    if (kind !== "file" && kind !== "link") {
      throw invalid(
        `${link} does not name an earlier regular file of the archive (found: ${kind ?? "nothing"}); ` +
          `hardlinks may only join regular files. ${this.fix}`,
      );
    }
    return canonical;
  }
}

const KINDS: readonly (EntryKind | "implicit")[] = ["implicit", "directory", "file", "symlink", "link"];
/** Longest name of one path component, in UTF-8 bytes (a whole path is at most MAX_PATH_BYTES). */
const SCRATCH_BYTES = MAX_PATH_BYTES * 4;

/**
 * The nodes of an ImageTree in typed arrays: per node its parent, kind and name (UTF-8, in one
 * shared buffer), found again through an open-addressing hash of (parent, name). About 20 bytes
 * a node plus its name, outside the JavaScript heap, and no garbage per lookup: a million paths
 * cost tens of MiB, where one Map entry and string per path cost several times that.
 */
class PathTable {
  /** Nodes, the root (id 0, a directory) included. */
  size = 1;
  private parents = new Uint32Array(1024);
  private kinds = new Uint8Array(1024).fill(KINDS.indexOf("directory"), 0, 1);
  private starts = new Uint32Array(1024);
  private lengths = new Uint16Array(1024);
  private names = Buffer.alloc(16 * 1024);
  private namesUsed = 0;
  /** id + 1 of the node in each slot; 0 is empty. */
  private slots = new Uint32Array(2048);
  private readonly scratch = Buffer.alloc(SCRATCH_BYTES);

  kind(id: number): EntryKind | "implicit" {
    return KINDS[this.kinds[id]];
  }

  setKind(id: number, kind: EntryKind | "implicit"): void {
    this.kinds[id] = KINDS.indexOf(kind);
  }

  /** The child of `parent` called `name`, if recorded. */
  child(parent: number, name: string): number | undefined {
    const length = this.scratch.write(name, 0, "utf8");
    const mask = this.slots.length - 1;
    for (let slot = hash(parent, this.scratch, 0, length) & mask; ; slot = (slot + 1) & mask) {
      const held = this.slots[slot];
      if (held === 0) return undefined;
      const id = held - 1;
      if (this.parents[id] === parent && this.sameName(id, length)) return id;
    }
  }

  /** A new node, an implied directory until setKind says otherwise; the caller checked it is absent. */
  add(parent: number, name: string): number {
    const length = this.scratch.write(name, 0, "utf8");
    if (this.size === this.parents.length) this.growNodes();
    if (this.namesUsed + length > this.names.length) this.growNames(length);
    const id = this.size++;
    this.parents[id] = parent;
    this.kinds[id] = 0;
    this.starts[id] = this.namesUsed;
    this.lengths[id] = length;
    this.scratch.copy(this.names, this.namesUsed, 0, length);
    this.namesUsed += length;
    if (this.size * 2 > this.slots.length) this.rehash(this.slots.length * 2);
    else this.place(id);
    return id;
  }

  private sameName(id: number, length: number): boolean {
    if (this.lengths[id] !== length) return false;
    const start = this.starts[id];
    return this.names.compare(this.scratch, 0, length, start, start + length) === 0;
  }

  private place(id: number): void {
    const mask = this.slots.length - 1;
    let slot = hash(this.parents[id], this.names, this.starts[id], this.starts[id] + this.lengths[id]) & mask;
    while (this.slots[slot] !== 0) slot = (slot + 1) & mask;
    this.slots[slot] = id + 1;
  }

  private rehash(slots: number): void {
    this.slots = new Uint32Array(slots);
    for (let id = 1; id < this.size; id++) this.place(id);
  }

  private growNodes(): void {
    const n = this.parents.length * 2;
    this.parents = grown(this.parents, new Uint32Array(n));
    this.kinds = grown(this.kinds, new Uint8Array(n));
    this.starts = grown(this.starts, new Uint32Array(n));
    this.lengths = grown(this.lengths, new Uint16Array(n));
  }

  private growNames(needed: number): void {
    const bigger = Buffer.alloc(Math.max(this.names.length * 2, this.namesUsed + needed));
    this.names.copy(bigger, 0, 0, this.namesUsed);
    this.names = bigger;
  }
}

function grown<T extends Uint8Array | Uint16Array | Uint32Array>(from: T, to: T): T {
  to.set(from);
  return to;
}

/** FNV-1a over a node's parent id and name bytes [start, end) of `bytes`. */
function hash(parent: number, bytes: Buffer, start: number, end: number): number {
  let h = 0x811c9dc5 ^ parent;
  h = Math.imul(h, 0x01000193);
  for (let i = start; i < end; i++) h = Math.imul(h ^ bytes[i], 0x01000193);
  return h >>> 0;
}
