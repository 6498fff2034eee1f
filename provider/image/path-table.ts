/**
 * The node table behind ImageTree (tree.ts): every path an archive describes, as a node in
 * typed arrays found again through a hash of (parent, name).
 * @internal
 */

import { type EntryKind, MAX_PATH_BYTES } from "./paths";

const KINDS: readonly (EntryKind | "implicit")[] = ["implicit", "directory", "file", "symlink", "link"];
/** Longest name of one path component, in UTF-8 bytes (a whole path is at most MAX_PATH_BYTES). */
const SCRATCH_BYTES = MAX_PATH_BYTES * 4;

/**
 * The nodes of an ImageTree in typed arrays: per node its parent, kind and name (UTF-8, in one
 * shared buffer), found again through an open-addressing hash of (parent, name). About 20 bytes
 * a node plus its name, outside the JavaScript heap, and no garbage per lookup: a million paths
 * cost tens of MiB, where one Map entry and string per path cost several times that.
 */
export class PathTable {
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
