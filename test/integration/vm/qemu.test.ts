import { randomBytes } from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { GciError } from "../../../provider/common/errors";
import { extractImage, Manifest, MANIFEST_SCHEMA } from "../../../provider/image";
import { driverFor, loadHandle, ProcessDriver, QemuDriver } from "../../../provider/cluster/vm";
import type { InstanceSpec } from "../../../provider/cluster/vm";
import { BuiltImage, guestImage } from "../../support/guest";
import { processesMentioning } from "../../support/procs";

async function httpGet(address: string): Promise<string> {
  const response = await fetch(`http://${address}/`, { signal: AbortSignal.timeout(10_000) });
  return response.text();
}

/** The error `fn` throws (or the promise rejects with), as a GciError. */
async function failure(fn: () => unknown): Promise<GciError> {
  try {
    await fn();
  } catch (e) {
    if (GciError.isInstance(e)) return e;
    throw e;
  }
  throw new Error("expected a GciError, got success");
}

/** Real QEMU guests from the debian-guest recipe (TCG unless a KVM probe boots a kernel). */
describe("QemuDriver", () => {
  let tmp: string;
  let image: BuiltImage;
  let imageDir: string;
  let manifest: Manifest;
  const driver = new QemuDriver();

  beforeAll(async () => {
    image = await guestImage();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gci-vm-qemu-"));
    imageDir = path.join(tmp, "image");
    manifest = (await extractImage(image.file, imageDir, { expectedDigest: image.digest })).manifest;
  }, 300_000);

  afterAll(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  const specFor = (id: string, overrides: Partial<InstanceSpec> = {}): InstanceSpec => ({
    id,
    datacenter: "test-dc",
    digest: image.digest,
    imageDir,
    manifest,
    vcpus: 1,
    memoryMiB: 256,
    runDir: path.join(tmp, "instances", id),
    ...overrides,
  });

  it("boots a guest that answers HTTP with its id, datacenter and digest, then stops it without a trace", async () => {
    const id = `vm-${randomBytes(4).toString("hex")}`;
    const spec = specFor(id);
    const started = Date.now();
    const handle = await driver.start(spec);
    try {
      expect(handle).toMatchObject({ id, kind: "vm", runDir: spec.runDir });
      expect(handle.addresses["80"]).toMatch(/^127\.0\.0\.1:\d+$/);
      expect(loadHandle(spec.runDir)).toEqual(handle);
      expect(driver.isRunning(handle)).toBe(true);
      // The same instance again: the running one, not a second guest.
      expect(await driver.start(spec)).toEqual(handle);

      await driver.waitReady(handle, 90_000);
      console.log(`guest ${id} ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      const body = await httpGet(handle.addresses["80"]);
      expect(body.trim()).toBe(`name=${id} datacenter=test-dc digest=${image.digest}`);
      expect(processesMentioning(`gci.id=${id} `)).toEqual([handle.pid]);
    } finally {
      await driver.stop(handle);
    }
    expect(driver.isRunning(handle)).toBe(false);
    expect(processesMentioning(`gci.id=${id} `)).toEqual([]);
    expect(fs.existsSync(path.join(spec.runDir, "qmp.sock"))).toBe(false);
    await driver.stop(handle); // idempotent
  }, 150_000);

  it("rejects at once, with the console's last lines, when the guest dies while booting", async () => {
    // The real kernel with an initramfs that is not one: it panics, and -no-reboot ends QEMU.
    const broken = path.join(tmp, "broken-image");
    fs.mkdirSync(broken);
    fs.symlinkSync(path.join(imageDir, manifest.kernel!), path.join(broken, manifest.kernel!));
    fs.writeFileSync(path.join(broken, manifest.initrd!), "not an initramfs\n");
    const id = `vm-${randomBytes(4).toString("hex")}`;
    const handle = await driver.start(specFor(id, { imageDir: broken }));
    try {
      const error = await failure(() => driver.waitReady(handle, 90_000));
      expect(error.code).toBe("FAILED_PRECONDITION");
      expect(error.message).toContain(`VM "${id}" exited before it was ready`);
      expect(error.message).toMatch(/panic: Kernel panic - not syncing: VFS/);
    } finally {
      await driver.stop(handle);
    }
  }, 120_000);

  it("validate refuses images the qemu driver cannot boot, naming the fix", async () => {
    const noKernel: Manifest = {
      schema: MANIFEST_SCHEMA,
      name: "no-kernel",
      driver: "qemu",
      initrd: "initrd.img",
    };
    const error = await failure(() => driver.validate(noKernel));
    expect(error.code).toBe("INVALID_ARGUMENT");
    expect(error.message).toBe(
      'image "no-kernel" has no kernel: the qemu driver boots a kernel and an initramfs; ' +
        "build the image with --kernel and --initrd",
    );
    const processImage: Manifest = {
      schema: MANIFEST_SCHEMA,
      name: "web",
      driver: "process",
      entrypoint: ["serve"],
    };
    expect((await failure(() => driver.validate(processImage))).message).toMatch(
      /is for the "process" driver/,
    );
    const spaced: Manifest = { ...manifest, env: { GREETING: "hello world" } };
    expect((await failure(() => driver.validate(spaced))).message).toMatch(
      /cannot travel on a kernel command line/,
    );
  });

  it("driverFor picks the driver the manifest names", () => {
    expect(driverFor(manifest)).toBeInstanceOf(QemuDriver);
    expect(
      driverFor({ schema: MANIFEST_SCHEMA, name: "w", driver: "process", entrypoint: ["s"] }),
    ).toBeInstanceOf(ProcessDriver);
  });
});
