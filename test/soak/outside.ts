/**
 * What the soak learns from OUTSIDE the cluster managers: /proc (instance processes, plugin
 * processes, a daemon's written bytes), the store folders (chunk files, image records) and
 * the catalog. Nothing here asks a daemon what it believes.
 */

import { createHash } from "crypto";
import * as fs from "fs";
import * as path from "path";

/** One process as /proc shows it. */
export interface ProcInfo {
  readonly pid: number;
  readonly ppid: number;
  readonly cmdline: string;
}

/** Every live (not zombie) process of the host, with its parent and command line. */
export function listProcesses(): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
      const after = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (after[0] === "Z" || after[0] === "X") continue;
      const cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0").join(" ");
      out.push({ pid: Number(entry), ppid: Number(after[1]), cmdline });
    } catch {
      // Ended while we looked.
    }
  }
  return out;
}

/**
 * The root process of each instance that runs from a datacenter's data folder: a process
 * whose command line names `<data>/instances/<id>/rootfs` (the sandbox, or QEMU's run folder)
 * and whose parent's does not. Instance id -> pids of such roots (more than one = a duplicate).
 */
export function instanceRoots(dataDir: string, procs: ProcInfo[] = listProcesses()): Map<string, number[]> {
  const prefix = path.join(dataDir, "instances") + "/";
  const byPid = new Map(procs.map((p) => [p.pid, p]));
  const idOf = (cmd: string): string | undefined => {
    const at = cmd.indexOf(prefix);
    if (at < 0) return undefined;
    const rest = cmd.slice(at + prefix.length);
    const m = /^([^/\s]+)\/(rootfs|qemu|disk|serial)/.exec(rest);
    return m?.[1];
  };
  const roots = new Map<string, number[]>();
  for (const p of procs) {
    const id = idOf(p.cmdline);
    if (id === undefined) continue;
    const parent = byPid.get(p.ppid);
    if (parent !== undefined && idOf(parent.cmdline) === id) continue;
    roots.set(id, [...(roots.get(id) ?? []), p.pid]);
  }
  return roots;
}

/** Pids of language-host.js / dynamic-host.js plugin processes whose environment names `stateDir`. */
export function pluginProcesses(stateDir: string, procs: ProcInfo[] = listProcesses()): number[] {
  return procs
    .filter((p) => /language-host\.js|dynamic-host\.js/.test(p.cmdline))
    .filter((p) => {
      try {
        return fs
          .readFileSync(`/proc/${p.pid}/environ`, "utf8")
          .split("\0")
          .includes(`GCI_STATE=${stateDir}`);
      } catch {
        return false;
      }
    })
    .map((p) => p.pid);
}

/** Bytes a process has passed to write()/writev() so far (/proc/<pid>/io wchar: sockets, files). */
export function writtenBytes(pid: number): number | undefined {
  try {
    const m = /^wchar: (\d+)$/m.exec(fs.readFileSync(`/proc/${pid}/io`, "utf8"));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** A chunk as an image record lists it. */
export interface Chunk {
  readonly sha256: string;
  readonly size: number;
}

/** The image record a store folder holds for `digest` (images/<hex>.json), or undefined. */
export function storeRecord(
  storeRoot: string,
  digest: string,
): { chunks: Chunk[]; sizeBytes: number } | undefined {
  const file = path.join(storeRoot, "images", `${digest.replace(/^sha256:/, "")}.json`);
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")) as { chunks: Chunk[]; sizeBytes: number };
  } catch {
    return undefined;
  }
}

/** The chunk file's path in a store folder. */
export function chunkFile(storeRoot: string, sha: string): string {
  return path.join(storeRoot, "chunks", sha.slice(0, 2), sha);
}

/** Bytes of the chunks of `chunks` whose files exist in the store and hash to their names. */
export function verifiedChunkBytes(storeRoot: string, chunks: readonly Chunk[]): number {
  let bytes = 0;
  for (const c of chunks) {
    try {
      const data = fs.readFileSync(chunkFile(storeRoot, c.sha256));
      if (createHash("sha256").update(data).digest("hex") === c.sha256) bytes += data.length;
    } catch {
      // Not there (yet).
    }
  }
  return bytes;
}

/**
 * Whether a store's copy of `digest` is whole: its record exists and the chunk files, in
 * order, hash to the digest. A reason when not.
 */
export function verifyCopy(storeRoot: string, digest: string): string | undefined {
  const record = storeRecord(storeRoot, digest);
  if (record === undefined) return `no image record for it in ${storeRoot}`;
  const whole = createHash("sha256");
  for (const c of record.chunks) {
    let data: Buffer;
    try {
      data = fs.readFileSync(chunkFile(storeRoot, c.sha256));
    } catch {
      return `chunk ${c.sha256} is missing from ${storeRoot}`;
    }
    if (createHash("sha256").update(data).digest("hex") !== c.sha256) return `chunk ${c.sha256} is corrupt`;
    whole.update(data);
  }
  const actual = `sha256:${whole.digest("hex")}`;
  return actual === digest ? undefined : `its chunks hash to ${actual}`;
}

/** sha256 names of the chunk files of a store that no image record of that store lists. */
export function unreferencedChunks(storeRoot: string, among: readonly Chunk[]): string[] {
  const referenced = new Set<string>();
  const records = path.join(storeRoot, "images");
  for (const name of fs.existsSync(records) ? fs.readdirSync(records) : []) {
    if (!name.endsWith(".json")) continue;
    try {
      const r = JSON.parse(fs.readFileSync(path.join(records, name), "utf8")) as { chunks: Chunk[] };
      for (const c of r.chunks) referenced.add(c.sha256);
    } catch {
      // A record being written: skip it this time.
    }
  }
  return among
    .map((c) => c.sha256)
    .filter((sha) => !referenced.has(sha) && fs.existsSync(chunkFile(storeRoot, sha)));
}
