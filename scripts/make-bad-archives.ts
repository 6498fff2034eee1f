/**
 * Writes the corpus of bad image archives in test/fixtures/bad-archives/: one small .tar per
 * rule of the image reader (provider/image/format.ts). Each is a good image with exactly one
 * defect, so a test that expects a rule's message cannot pass because of another rule.
 * Deterministic (mtime 0, fixed contents): running it again rewrites identical files.
 *
 *   npx tsx scripts/make-bad-archives.ts
 */

import { execFileSync } from "child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "fs";
import { tmpdir } from "os";
import { join } from "path";
import * as tar from "tar-stream";

const OUT = join(__dirname, "..", "test", "fixtures", "bad-archives");

/** One entry to write; `body` only for regular files. */
interface Spec {
  readonly name: string;
  readonly type?: "file" | "directory" | "symlink" | "link" | "character-device" | "block-device" | "fifo";
  readonly body?: string | Buffer;
  readonly linkname?: string;
  readonly pax?: Record<string, string>;
  readonly devmajor?: number;
  readonly devminor?: number;
}

const MANIFEST = {
  schema: "gci.image/v1",
  name: "bad-sample",
  driver: "qemu",
  kernel: "boot/vmlinuz",
  initrd: "boot/initrd.img",
};

const manifest = (fields: Record<string, unknown> = MANIFEST): Spec => ({
  name: "manifest.json",
  body: JSON.stringify(fields),
});
const INITRD: Spec = { name: "boot/initrd.img", body: "initramfs placeholder\n" };
// Long enough that a cut in its middle lands inside its data.
const KERNEL: Spec = { name: "boot/vmlinuz", body: Buffer.alloc(4096, "k") };
const GOOD: Spec[] = [manifest(), INITRD, KERNEL];

/**
 * The path bomb: entries whose 3,999-byte paths share no prefix ("<n>/a/a/…/a"), so each one
 * implies 1,999 new directories. Before the image reader bounded the paths it tracks, each
 * entry (5 KiB here) cost it about 4 MiB of heap; 520 of them pass its limit of 1,000,000
 * paths (entries and the directories they imply) at entry #501.
 */
function pathBomb(): Spec[] {
  const deep = "/a".repeat(1998);
  return Array.from({ length: 520 }, (_, n) => ({ name: `${String(n).padStart(3, "0")}${deep}`, body: "" }));
}

/**
 * A qcow2 disk whose header names a backing file, written by qemu-img itself (deterministic:
 * the same arguments give the same 1,792 bytes). The backing file is never opened (-u); the
 * name is a path no test creates, never a real secret.
 */
function qcow2WithBacking(backing: string): Buffer {
  const dir = mkdtempSync(join(tmpdir(), "gci-bad-qcow2-"));
  try {
    const file = join(dir, "disk.qcow2");
    execFileSync(
      "qemu-img",
      ["create", "-q", "-f", "qcow2", "-o", "cluster_size=512", "-u", "-b", backing].concat([
        "-F",
        "raw",
        file,
        "1M",
      ]),
    );
    return readFileSync(file);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const CANARY = "/tmp/gci-bad-archive-canary.raw";
const withDisk = (disk: Buffer): Spec[] => [
  manifest({ ...MANIFEST, disk: "disk.qcow2" }),
  INITRD,
  KERNEL,
  { name: "disk.qcow2", body: disk },
];

/** Writes the entries with tar-stream, exactly as given (no normalization, mtime 0). */
async function build(entries: readonly Spec[]): Promise<Buffer> {
  const pack = tar.pack();
  const parts: Buffer[] = [];
  const collected = (async () => {
    for await (const part of pack) parts.push(part as Buffer);
  })();
  for (const e of entries) {
    const type = e.type ?? "file";
    const header = {
      name: e.name,
      type,
      mode: type === "directory" ? 0o755 : 0o644,
      mtime: new Date(0),
      uid: 0,
      gid: 0,
      linkname: e.linkname,
      pax: e.pax,
      devmajor: e.devmajor,
      devminor: e.devminor,
    };
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (type === "file") pack.entry(header, e.body ?? "", done);
      else pack.entry(header, done);
    });
  }
  pack.finalize();
  await collected;
  return Buffer.concat(parts);
}

async function main(): Promise<void> {
  const good = await build(GOOD);
  const corpus: Record<string, Buffer> = {
    "abs-path.tar": await build([...GOOD, { name: "/etc/evil", body: "x" }]),
    "dotdot.tar": await build([...GOOD, { name: "../evil", body: "x" }]),
    "symlink-escape.tar": await build([...GOOD, { name: "escape", type: "symlink", linkname: "../../etc" }]),
    // Each link stays inside on its own; followed together, x resolves to the root's parent.
    "symlink-chain-escape.tar": await build([
      ...GOOD,
      { name: "x", type: "symlink", linkname: "y/.." },
      { name: "y", type: "symlink", linkname: "." },
    ]),
    "under-symlink.tar": await build([
      ...GOOD,
      { name: "lib", type: "symlink", linkname: "boot" },
      { name: "lib/evil", body: "x" },
    ]),
    "hardlink-escape.tar": await build([...GOOD, { name: "hl", type: "link", linkname: "../outside" }]),
    "device-node.tar": await build([
      ...GOOD,
      { name: "dev/null", type: "character-device", devmajor: 1, devminor: 3 },
    ]),
    "block-device.tar": await build([
      ...GOOD,
      { name: "dev/sda", type: "block-device", devmajor: 8, devminor: 0 },
    ]),
    "fifo.tar": await build([...GOOD, { name: "pipe", type: "fifo" }]),
    "duplicate-entry.tar": await build([...GOOD, { name: "boot/vmlinuz", body: "second kernel" }]),
    "oversize-manifest.tar": await build([
      { name: "manifest.json", body: JSON.stringify(MANIFEST) + " ".repeat(70 * 1024) },
      INITRD,
      KERNEL,
    ]),
    "oversize-pax-header.tar": await build([
      ...GOOD,
      { name: "notes.txt", body: "x", pax: { comment: "p".repeat(20 * 1024) } },
    ]),
    // Cut in the middle of the kernel's data (the last entry).
    "truncated.tar": good.subarray(0, good.length - 1024 - 2048),
    // Cut exactly after the last entry: tar-stream sees whole entries, only the end marker is gone.
    "missing-end.tar": good.subarray(0, good.length - 1024),
    "not-a-tar.tar": Buffer.from("this is not a tar archive\n".repeat(40)),
    "manifest-missing.tar": await build([INITRD, KERNEL]),
    "manifest-not-first.tar": await build([KERNEL, manifest(), INITRD]),
    "manifest-bad-json.tar": await build([{ name: "manifest.json", body: "{ not json" }, INITRD, KERNEL]),
    "manifest-missing-fields.tar": await build([
      manifest({ schema: "gci.image/v1", driver: "qemu" }),
      INITRD,
      KERNEL,
    ]),
    "manifest-wrong-type.tar": await build([manifest({ ...MANIFEST, ports: ["80"] }), INITRD, KERNEL]),
    "manifest-unknown-field.tar": await build([manifest({ ...MANIFEST, memory: 512 }), INITRD, KERNEL]),
    "kernel-absent.tar": await build([manifest(), INITRD]),
    "path-bomb.tar": await build([...GOOD, ...pathBomb()]),
    "qcow2-backing-file.tar": await build(withDisk(qcow2WithBacking(CANARY))),
    "qcow2-backing-json.tar": await build(
      withDisk(qcow2WithBacking(`json:${JSON.stringify({ file: { driver: "file", filename: CANARY } })}`)),
    ),
    "manifest-ld-preload.tar": await build([
      manifest({ ...MANIFEST, env: { LD_PRELOAD: "/tmp/gci-bad-archive-canary.so" } }),
      INITRD,
      KERNEL,
    ]),
    // A good image, only larger than the 1 MiB --max-upload-bytes its test gives the cluster manager.
    "over-upload-max.tar": await build([
      ...GOOD,
      { name: "padding.bin", body: Buffer.alloc(1100 * 1024, "p") },
    ]),
  };
  mkdirSync(OUT, { recursive: true });
  for (const [name, bytes] of Object.entries(corpus)) {
    writeFileSync(join(OUT, name), bytes);
    console.log(JSON.stringify({ file: join("test/fixtures/bad-archives", name), bytes: bytes.length }));
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
