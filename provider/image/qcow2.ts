/**
 * Disk images that reach outside themselves. QEMU follows what a qcow2 header names — a backing
 * file (`qemu-img create -f qcow2 -b /etc/shadow -F raw`, or a `json:{…}` one naming any driver)
 * or an external data file — and it opens drives before `-runas` drops root, so such a disk
 * would let a guest read any host file or device. Disks are attached as qcow2 or raw (by their
 * magic, see the qemu driver); raw has no header QEMU interprets, so only qcow2 is checked.
 * One rule, used at push (the disk entry's first bytes) and at boot (the extracted file).
 * @internal
 */

import * as fs from "fs";
import { invalid } from "../common/errors";

/** The first bytes of a qcow2 file: "QFI\xfb". */
export const QCOW2_MAGIC = Buffer.from([0x51, 0x46, 0x49, 0xfb]);
/** Bytes of a disk's start that the check reads: the header and its extensions live there. */
export const DISK_HEADER_BYTES = 64 * 1024;

const EXT_END = 0x00000000;
const EXT_DATA_FILE = 0x44415441;
/** Incompatible feature bit 2: the guest's data lives in an external file. */
const INCOMPATIBLE_DATA_FILE = 1n << 2n;

/** Whether the bytes start like a qcow2 image (QEMU attaches it as qcow2; anything else as raw). */
export function isQcow2(head: Buffer): boolean {
  return head.length >= 4 && head.subarray(0, 4).equals(QCOW2_MAGIC);
}

/**
 * Why a disk whose first bytes are `head` would make QEMU open another file, or undefined when
 * it would not (raw, or a self-contained qcow2). `head` should hold DISK_HEADER_BYTES or the
 * whole disk if shorter; a qcow2 header cut short is refused, since it cannot be judged.
 */
export function diskProblem(head: Buffer): string | undefined {
  if (!isQcow2(head)) return undefined;
  if (head.length < 72) return "is a qcow2 image with a truncated header";
  const version = head.readUInt32BE(4);
  const backingOffset = head.readBigUInt64BE(8);
  const backingSize = head.readUInt32BE(16);
  if (backingOffset !== 0n || backingSize !== 0) {
    const name = backingName(head, backingOffset, backingSize);
    return `is a qcow2 image with a backing file${name === undefined ? "" : ` (${JSON.stringify(name)})`}`;
  }
  if (version < 3) return undefined;
  if (head.length < 104) return "is a qcow2 v3 image with a truncated header";
  if ((head.readBigUInt64BE(72) & INCOMPATIBLE_DATA_FILE) !== 0n) {
    return "is a qcow2 image whose data lives in an external data file";
  }
  // Header extensions follow the header: type, length, data padded to 8 bytes, until type 0.
  let at = head.readUInt32BE(100);
  while (at + 8 <= head.length) {
    const type = head.readUInt32BE(at);
    const length = head.readUInt32BE(at + 4);
    if (type === EXT_END) return undefined;
    if (type === EXT_DATA_FILE) return "is a qcow2 image that names an external data file";
    at += 8 + Math.ceil(length / 8) * 8;
  }
  return "is a qcow2 image whose header extensions do not end within its first 64 KiB";
}

/** INVALID_ARGUMENT naming the disk and the fix, when diskProblem finds one. */
export function checkDisk(label: string, head: Buffer): void {
  const problem = diskProblem(head);
  if (problem !== undefined) {
    throw invalid(
      `disk ${label} ${problem}, which QEMU would open on the host: a guest could read any host file ` +
        `through it. Make the disk self-contained (qemu-img convert -O qcow2 in.qcow2 out.qcow2, or -O raw) ` +
        `and pack the image again.`,
    );
  }
}

/** checkDisk on a file: reads its first DISK_HEADER_BYTES. */
export function checkDiskFile(label: string, file: string): void {
  const head = Buffer.alloc(DISK_HEADER_BYTES);
  const fd = fs.openSync(file, "r");
  let n: number;
  try {
    n = fs.readSync(fd, head, 0, head.length, 0);
  } finally {
    fs.closeSync(fd);
  }
  checkDisk(label, head.subarray(0, n));
}

function backingName(head: Buffer, offset: bigint, size: number): string | undefined {
  const start = Number(offset);
  if (offset > BigInt(head.length) || size === 0 || start + size > head.length) return undefined;
  return head.subarray(start, start + Math.min(size, 200)).toString("latin1");
}
