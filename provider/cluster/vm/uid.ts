/**
 * One uid (and the same gid) per instance, so that instances — QEMU guests and process
 * instances alike — cannot signal, trace or read one another's files, as they could when all
 * of them ran as nobody. A uid is claimed by creating `<dir>/<uid>` exclusively (atomic across
 * every cluster manager and world on the host), holding the instance's run directory; the
 * default folder is under /run, which the host empties at boot, when no instance runs any more.
 * @internal
 */

import { createHash } from "crypto";
import * as fs from "fs";
import * as path from "path";
import { GciError } from "../../common/errors";

/** The first uid handed to an instance; far above the ranges login users and subuids use. */
export const UID_BASE = 1_800_000_000;
/** How many instances can hold a uid at once on one host. */
export const UID_SLOTS = 1_000_000;
/** Where claims live unless $GCI_UID_DIR says otherwise. */
export const DEFAULT_UID_DIR = "/run/gci/uids";

function uidDir(): string {
  return process.env.GCI_UID_DIR || DEFAULT_UID_DIR;
}

/**
 * The uid of the instance in `runDir`: the one it already holds, or a free one claimed now.
 * The search starts at a slot derived from the run directory, so claims rarely meet.
 */
export function claimUid(runDir: string, dir: string = uidDir()): number {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const start = createHash("sha256").update(runDir).digest().readUInt32BE(0) % UID_SLOTS;
  for (let i = 0; i < UID_SLOTS; i++) {
    const uid = UID_BASE + ((start + i) % UID_SLOTS);
    const file = path.join(dir, String(uid));
    try {
      fs.writeFileSync(file, runDir, { flag: "wx", mode: 0o600 });
      return uid;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    const holder = readHolder(file);
    if (holder === runDir) return uid;
    // A claim whose instance folder is gone was left by a cluster manager that died: take it.
    if (holder !== undefined && !fs.existsSync(holder)) {
      fs.rmSync(file, { force: true });
      i--;
    }
  }
  throw new GciError(
    "RESOURCE_EXHAUSTED",
    `all ${UID_SLOTS} instance uids are in use on this host (claims in ${dir}): stop some instances`,
  );
}

/** Gives the uid back, if `runDir` still holds it. */
export function releaseUid(uid: number, runDir: string, dir: string = uidDir()): void {
  const file = path.join(dir, String(uid));
  if (readHolder(file) === runDir) fs.rmSync(file, { force: true });
}

function readHolder(file: string): string | undefined {
  try {
    return fs.readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}
