/**
 * A model of the tree an archive would create, built entry by entry. It lets the reader judge
 * links the way the kernel will once the image is extracted: a symlink chain can leave the root
 * even when every link looks harmless on its own (y -> ".", x -> "y/..").
 * @internal
 */

import { invalid } from "../common/errors";
import { show } from "../common/digest";
import { PathTable } from "./path-table";
import { type EntryKind, HOW_TO_REPACK, MAX_LINK_WALK, MAX_PATHS, MAX_TOTAL_PATH_BYTES } from "./paths";

/** Links followed while resolving one path before it is called a loop (Linux's limit). */
const MAX_LINK_HOPS = 40;

/** Where a path leads once symlinks inside the image are followed. */
export type Resolution = { kind: "inside"; path: string } | { kind: "escapes" } | { kind: "loop" };

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
