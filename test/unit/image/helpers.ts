/**
 * Shared fixtures of the image tests: sandboxes, a small good image directory, the corpus of
 * bad archives with the message each must produce, and a tree scan.
 */

import { randomBytes } from "crypto";
import { chmod, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from "fs/promises";
import { tmpdir } from "os";
import { join } from "path";
import { GciError } from "../../../provider/common/errors";
import type { Manifest } from "../../../provider/image";

export const CORPUS_DIR = join(__dirname, "..", "..", "fixtures", "bad-archives");

/**
 * Every corpus archive (made by scripts/make-bad-archives.ts) and a distinctive part of the
 * message it must be refused with: it names the entry (or field) and the rule.
 */
export const CORPUS: Readonly<Record<string, string>> = {
  "abs-path.tar": 'entry "/etc/evil" has an absolute path',
  "dotdot.tar": 'entry "../evil" has a ".." path component',
  "symlink-escape.tar": 'symlink "escape" -> "../../etc" leaves the image root',
  "symlink-chain-escape.tar": 'symlink "x" -> "y/.." leads outside the image root',
  "under-symlink.tar": 'entry "lib/evil" lies under "lib", which is a symlink',
  "hardlink-escape.tar": 'hardlink "hl" -> "../outside" leaves the image root',
  "device-node.tar": 'entry "dev/null" is a character-device',
  "block-device.tar": 'entry "dev/sda" is a block-device',
  "fifo.tar": 'entry "pipe" is a fifo',
  "duplicate-entry.tar": 'entry "boot/vmlinuz" appears twice',
  "oversize-manifest.tar": 'entry "manifest.json" is 71792 bytes; the limit is 65536 bytes',
  "oversize-pax-header.tar":
    'entry "notes.txt" carries 21504 bytes of pax/long-name headers; the limit is 16384',
  "truncated.tar": 'archive is truncated: it ends in entry "boot/vmlinuz"',
  "missing-end.tar": 'after entry "boot/vmlinuz" without the end-of-archive marker',
  "not-a-tar.tar": "archive is not a valid tar file",
  "manifest-missing.tar": 'archive has no "manifest.json" (its first entry is "boot/initrd.img")',
  "manifest-not-first.tar":
    'entry "manifest.json" is entry #2, after "boot/vmlinuz": the manifest must be the first',
  "manifest-bad-json.tar": 'entry "manifest.json" is not valid JSON',
  "manifest-missing-fields.tar": 'name: is required; kernel: is required for driver "qemu"',
  "manifest-wrong-type.tar": 'ports[0]: must be an integer from 1 to 65535, got "80"',
  "manifest-unknown-field.tar": "memory: is not a field of gci.image/v1",
  "kernel-absent.tar": 'field "kernel" names "boot/vmlinuz", which is not in the archive',
  "path-bomb.tar": "past its limit of 1000000 paths",
  "qcow2-backing-file.tar":
    'disk "disk.qcow2" is a qcow2 image with a backing file ("/tmp/gci-bad-archive-canary.raw")',
  "qcow2-backing-json.tar": 'disk "disk.qcow2" is a qcow2 image with a backing file ("json:{',
  "manifest-ld-preload.tar": "env.LD_PRELOAD: is not allowed",
};

/**
 * The corpus archive that is a good image, only larger than the --max-upload-bytes (1 MiB) its
 * test gives a cluster manager, and part of the message that refusal carries.
 */
export const OVER_UPLOAD_MAX = {
  file: "over-upload-max.tar",
  maxUploadBytes: 1024 * 1024,
  message: "larger than its maximum of 1048576 bytes (--max-upload-bytes",
} as const;

/** Corpus archives over 100 KiB: each must be, to reach the limit it tests. */
export const LARGE_CORPUS_FILES: readonly string[] = ["path-bomb.tar", OVER_UPLOAD_MAX.file];

/** Corpus archives whose defect is a path or link that would leave the image on extraction. */
export const ESCAPES = [
  "abs-path.tar",
  "dotdot.tar",
  "symlink-escape.tar",
  "symlink-chain-escape.tar",
  "under-symlink.tar",
  "hardlink-escape.tar",
];

/** A fresh temp directory; remove it with removeSandbox. */
export function sandbox(): Promise<string> {
  return mkdtemp(join(tmpdir(), "gci-image-test-"));
}

export function removeSandbox(dir: string): Promise<void> {
  return rm(dir, { recursive: true, force: true });
}

export const QEMU_MANIFEST: Manifest = {
  schema: "gci.image/v1",
  name: "tiny-linux",
  driver: "qemu",
  kernel: "boot/vmlinuz",
  initrd: "boot/initrd.img",
  cmdline: "console=ttyS0",
  ports: [8080],
  env: { B: "2", A: "1" },
};

/**
 * Writes a small qemu image directory: kernel and initrd, an executable, a relative symlink,
 * an empty directory. `kernel` lets a test vary the bulk of the content.
 */
export async function makeImageDir(dir: string, kernel: Buffer = randomBytes(100_000)): Promise<string> {
  await mkdir(join(dir, "boot"), { recursive: true });
  await mkdir(join(dir, "bin"));
  await mkdir(join(dir, "var", "empty"), { recursive: true });
  await writeFile(join(dir, "boot", "vmlinuz"), kernel);
  await writeFile(join(dir, "boot", "initrd.img"), "initramfs\n");
  await writeFile(join(dir, "bin", "app"), "#!/bin/sh\necho hi\n");
  await chmod(join(dir, "bin", "app"), 0o700);
  await symlink("vmlinuz", join(dir, "boot", "kernel"));
  return dir;
}

/** Every path under dir (files, links and directories), relative and sorted; links are not followed. */
export async function listTree(dir: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const entry of await readdir(join(dir, rel), { withFileTypes: true })) {
      const path = rel === "" ? entry.name : `${rel}/${entry.name}`;
      found.push(path);
      if (entry.isDirectory()) await walk(path);
    }
  };
  await walk("");
  return found.sort();
}

/** The error a promise rejects with, asserted to be a GciError. */
export async function failure(p: Promise<unknown>): Promise<GciError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!GciError.isInstance(e)) throw new Error(`expected a GciError, got ${String(e)}`);
  return e;
}
