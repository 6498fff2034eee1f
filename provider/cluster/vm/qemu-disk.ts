/**
 * An image's disk attached to a guest: opened read-only (qcow2 without following a backing
 * file), with a throwaway qcow2 layer in the run directory taking the guest's writes.
 */

import { execFile } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { promisify } from "util";
import { isQcow2 } from "../../image/qcow2";
import { GciError, invalid, precondition } from "../../common/errors";
import { findOnPath } from "./host";

const execFileP = promisify(execFile);

/** The throwaway qcow2 layer that takes a guest's writes to its disk. */
export const DISK_OVERLAY = "disk-overlay.qcow2";

/** The qemu-img binary, which makes a disk's throwaway layer; FAILED_PRECONDITION when missing. */
function resolveQemuImg(): string {
  const found = findOnPath("qemu-img");
  if (found === undefined) {
    throw precondition(
      `qemu-img is not installed, and the qemu driver needs it to attach an image's disk: ` +
        `run apt-get install -y qemu-utils`,
    );
  }
  return found;
}

/**
 * QEMU's arguments attaching `disk` as the guest's virtio disk. The stored disk is opened
 * read-only and, when qcow2, with `backing: null`: QEMU follows no file its header names, even
 * one the boot check missed (the check is the first line, this the second). Guest writes land
 * in a throwaway qcow2 layer in `runDir` (made empty here, removed when the VM stops), so they
 * never reach the stored image, as `snapshot=on` ensured before.
 * @internal
 */
export async function diskArgs(disk: string, runDir: string): Promise<string[]> {
  const format = diskFormat(disk);
  const overlay = path.join(runDir, DISK_OVERLAY);
  try {
    await execFileP(resolveQemuImg(), [
      "create",
      "-q",
      "-f",
      "qcow2",
      overlay,
      String(virtualSize(disk, format)),
    ]);
  } catch (e) {
    if (GciError.isInstance(e)) throw e;
    throw precondition(
      `qemu-img could not make the throwaway layer ${overlay} for disk ${disk}: ` +
        `${((e as { stderr?: string }).stderr ?? String(e)).trim()}; check that ${runDir} is writable`,
    );
  }
  const image = {
    driver: format,
    "node-name": "disk-image",
    "read-only": true,
    file: { driver: "file", filename: disk, "read-only": true },
    ...(format === "qcow2" ? { backing: null } : {}),
  };
  const layer = {
    driver: "qcow2",
    "node-name": "disk",
    file: { driver: "file", filename: overlay },
    backing: "disk-image",
  };
  return [
    ...["-blockdev", JSON.stringify(image), "-blockdev", JSON.stringify(layer)],
    ...["-device", "virtio-blk-pci,drive=disk"],
  ];
}

/** "qcow2" when the file starts with the qcow2 magic, else "raw". */
function diskFormat(file: string): "qcow2" | "raw" {
  return isQcow2(readHead(file, 4)) ? "qcow2" : "raw";
}

/** The size the guest sees: a qcow2 header's size field (bytes 24-31), or a raw file's length. */
function virtualSize(file: string, format: "qcow2" | "raw"): bigint {
  if (format === "raw") return BigInt(fs.statSync(file).size);
  const head = readHead(file, 32);
  if (head.length < 32) {
    throw invalid(`disk ${file} is a qcow2 image with a truncated header: pack the image with a whole disk`);
  }
  return head.readBigUInt64BE(24);
}

function readHead(file: string, bytes: number): Buffer {
  const head = Buffer.alloc(bytes);
  const fd = fs.openSync(file, "r");
  try {
    return head.subarray(0, fs.readSync(fd, head, 0, bytes, 0));
  } finally {
    fs.closeSync(fd);
  }
}
