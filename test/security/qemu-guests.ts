/**
 * Shared by the test/security/qemu-*.test.ts files: real QEMU guests of the probe-guest image,
 * whose console reports what the guest can reach (see test/support/images/probe-guest/init).
 */

import { randomBytes } from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { extractImage, Manifest } from "../../provider/image";
import type { InstanceHandle, InstanceSpec } from "../../provider/cluster/vm";
import { BuiltImage, probeGuestImage } from "../support/guest";

/** The probe-guest image extracted into a temporary folder, and specs to boot it. */
export interface ProbeGuests {
  readonly tmp: string;
  readonly image: BuiltImage;
  readonly imageDir: string;
  readonly manifest: Manifest;
  /** A spec for a new instance of the image; `cmdline` is added to the image's own. */
  spec(overrides?: { manifest?: Partial<Manifest>; cmdline?: string }): InstanceSpec;
  /** Removes the temporary folder. */
  remove(): void;
}

export async function probeGuests(): Promise<ProbeGuests> {
  const image = await probeGuestImage();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gci-security-qemu-"));
  const imageDir = path.join(tmp, "image");
  const { manifest } = await extractImage(image.file, imageDir, { expectedDigest: image.digest });
  return {
    tmp,
    image,
    imageDir,
    manifest,
    spec(overrides = {}) {
      const id = `vm-${randomBytes(4).toString("hex")}`;
      const cmdline = [manifest.cmdline ?? "", overrides.cmdline ?? ""].join(" ").trim();
      return {
        id,
        datacenter: "security-dc",
        digest: image.digest,
        imageDir,
        manifest: { ...manifest, ...overrides.manifest, cmdline },
        vcpus: 1,
        memoryMiB: 256,
        runDir: path.join(tmp, "instances", id),
      };
    },
    remove() {
      fs.rmSync(tmp, { recursive: true, force: true });
    },
  };
}

/**
 * The first console line matching `pattern`, polled every 200 ms; rejects when `timeoutMs`
 * passes or QEMU ends first (with the console's tail, to see why).
 */
export async function consoleLine(
  handle: InstanceHandle,
  pattern: RegExp,
  timeoutMs: number,
  isRunning: () => boolean,
): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = fs.existsSync(handle.logFile) ? fs.readFileSync(handle.logFile, "utf8") : "";
    const line = text.split("\n").find((l) => pattern.test(l));
    if (line !== undefined) return line.trim();
    const tail = text.split("\n").slice(-8).join(" | ");
    if (!isRunning()) throw new Error(`VM ${handle.id} ended before printing ${pattern}: ${tail}`);
    if (Date.now() > deadline) throw new Error(`no ${pattern} on VM ${handle.id}'s console: ${tail}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
