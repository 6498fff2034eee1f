/**
 * The push-time half of the qcow2 rule: judging each regular file's first bytes as the archive
 * streams past, and, once the archive is known, whether the manifest's disk leads to a flagged file.
 */

import { invalid } from "../common/errors";
import { show } from "../common/digest";
import { DISK_HEADER_BYTES, checkDisk, diskProblem, isQcow2 } from "./qcow2";
import type { ImageTree } from "./tree";

/**
 * The push-time half of the qcow2 rule (provider/image/qcow2.ts): each regular file's first
 * DISK_HEADER_BYTES are judged as they stream past. The manifest's disk, named directly, is
 * refused at once with the header's own reason; other files that would make QEMU open another
 * file are only remembered by path, in case the disk reaches them through links.
 */
export class DiskHeads {
  private readonly flagged = new Set<string>();

  /** Passes a file's data through unchanged, judging its head on the way. */
  async *watch(path: string, disk: string | undefined, data: AsyncIterable<Buffer>): AsyncIterable<Buffer> {
    const head: Buffer[] = [];
    let size = 0;
    let judged = false;
    for await (const piece of data) {
      if (!judged) {
        head.push(piece);
        size += piece.length;
        // The magic decides once 4 bytes are here (anything else QEMU attaches raw); a qcow2 is
        // judged on its whole header. Nothing is kept after that.
        const rawDisk = size >= 4 && size - piece.length < 4 && !isQcow2(Buffer.concat(head));
        if (rawDisk || size >= DISK_HEADER_BYTES) {
          this.judge(path, disk, Buffer.concat(head));
          judged = true;
          head.length = 0;
        }
      }
      yield piece;
    }
    if (!judged) this.judge(path, disk, Buffer.concat(head));
  }

  /** Once the archive is known: the disk must not be, through links, a file judged unsafe. */
  checkLinked(tree: ImageTree, disk: string | undefined): void {
    if (disk === undefined) return;
    const file = tree.fileBehind(disk);
    if (file === undefined || !this.flagged.has(file)) return;
    throw invalid(
      `disk ${show(disk)} (manifest field "disk") leads through links to ${show(file)}, a qcow2 image that ` +
        `names a backing file or an external data file, which QEMU would open on the host: a guest could ` +
        `read any host file through it. Make the disk self-contained (qemu-img convert -O qcow2 in.qcow2 ` +
        `out.qcow2, or -O raw) and pack the image again.`,
    );
  }

  private judge(path: string, disk: string | undefined, head: Buffer): void {
    const start = head.subarray(0, DISK_HEADER_BYTES);
    if (path === disk) checkDisk(show(path), start);
    else if (diskProblem(start) !== undefined) this.flagged.add(path);
  }
}
