/**
 * Issue 10, item 5 (logs): what an instance prints is kept in a capped, rotated log — the
 * current file and one previous, each at most 1 MiB — so an instance printing without end
 * cannot fill the host's disk, and the newest lines are still what GetVmLogs returns.
 */

import { randomUUID } from "crypto";
import * as fs from "fs";
import * as path from "path";
import { waitForOperation } from "../../provider/common/client";
import { extractImage, packDirectory } from "../../provider/image";
import { execFileSync } from "child_process";
import * as os from "os";
import { InstanceHandle, ProcessDriver, QemuDriver } from "../../provider/cluster/vm";
import { resolveQemu } from "../../provider/cluster/vm/qemu";
import { guestImage } from "../support/guest";
import { testWorld, until } from "../support/world";
import { outputOf, processFixture, ProcessFixture, specFor } from "./process-helpers";

const CAP_BYTES = 1024 * 1024;
/** About 4.3 MB of numbered lines (four times the cap), then a last line; the instance keeps running. */
const FLOOD = [
  "echo GCI-READY",
  "pad=$(printf '%0100d' 0); i=0",
  'while [ "$i" -lt 40000 ]; do echo "$i $pad"; i=$((i+1)); done',
  "echo flood-done",
  "sleep 60",
].join("\n");

/** Sizes of the instance's log files: the current one and every rotated one beside it. */
function logSizes(handle: InstanceHandle): Record<string, number> {
  const dir = path.dirname(handle.logFile);
  const base = path.basename(handle.logFile);
  const sizes: Record<string, number> = {};
  for (const name of fs.readdirSync(dir)) {
    if (name.startsWith(base)) sizes[name] = fs.statSync(path.join(dir, name)).size;
  }
  return sizes;
}

describe("capped, rotated logs of process instances", () => {
  let fixture: ProcessFixture;
  const driver = new ProcessDriver();

  beforeAll(async () => {
    fixture = await processFixture("logs");
  }, 300_000);

  afterAll(() => {
    if (fixture) fs.rmSync(fixture.tmp, { recursive: true, force: true });
  });

  it("keeps an instance printing without end under the cap: the current file and one previous, contiguous", async () => {
    const handle = await driver.start(specFor(fixture, { script: FLOOD }));
    try {
      await until(() => outputOf(handle).includes("flood-done"), 60_000, "flood-done");
      const sizes = logSizes(handle);
      expect(Object.keys(sizes).sort()).toEqual(["output.log", "output.log.1"]);
      for (const [name, size] of Object.entries(sizes))
        expect(`${name}: ${size <= CAP_BYTES}`).toBe(`${name}: true`);
      // Nothing is lost at the rotation: the numbered lines run on from one file into the next.
      const numbers = outputOf(handle)
        .split("\n")
        .map((line) => /^(\d+) 0+$/.exec(line)?.[1])
        .filter((n): n is string => n !== undefined)
        .map(Number);
      expect(numbers[numbers.length - 1]).toBe(39_999);
      expect(numbers.every((n, i) => i === 0 || n === numbers[i - 1] + 1)).toBe(true);
    } finally {
      await driver.stop(handle);
    }
  }, 90_000);

  it("finds the ready marker printed after the log has rotated", async () => {
    const script = FLOOD.replace("echo GCI-READY\n", "").replace("echo flood-done", "echo GCI-READY");
    const handle = await driver.start(specFor(fixture, { script }));
    try {
      await driver.waitReady(handle, 60_000);
      expect(Object.keys(logSizes(handle)).sort()).toEqual(["output.log", "output.log.1"]);
    } finally {
      await driver.stop(handle);
    }
  }, 90_000);

  it("GetVmLogs still returns the newest tail of a cluster manager's instance", async () => {
    const world = await testWorld({ regions: { sec: ["sec-logs-1"] } });
    try {
      const root = path.join(fixture.tmp, "flood-root");
      const info = await extractImage(fixture.image.file, root);
      fs.rmSync(path.join(root, "manifest.json"), { force: true });
      const file = path.join(fixture.tmp, "flood.tar");
      const manifest = { ...info.manifest, name: "flood", entrypoint: ["bin/sh", "-c", FLOOD], ports: [] };
      const image = await packDirectory(root, manifest, file);
      const client = world.client("sec-logs-1");
      await client.uploadImage(fs.createReadStream(file), { request_id: randomUUID(), name: "" });
      const op = await client.startVms({
        request_id: randomUUID(),
        image_digest: image.digest,
        datacenter: "sec-logs-1",
        count: 1,
        machine_size: "nano",
      });
      await waitForOperation(client, op, { timeoutMs: 60_000 });
      const [vm] = await client.listVms(op.id.replace(/^start-/, ""));
      const tail = await until(
        async () => {
          const text = await client.getVmLogs(vm.id, 4096);
          return text.includes("flood-done") ? text : undefined;
        },
        60_000,
        "flood-done in GetVmLogs",
      );
      expect(tail.trimEnd().split("\n").pop()).toBe("flood-done");
      expect(tail).toContain(`39999 ${"0".repeat(100)}`);
      const stop = await client.stopVms(randomUUID(), op.id.replace(/^start-/, ""));
      await waitForOperation(client, stop, { timeoutMs: 60_000 });
    } finally {
      await world.stop();
    }
  }, 180_000);
});

describe("capped, rotated console logs of QEMU guests", () => {
  let tmp: string;

  afterAll(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("keeps a guest printing without end on its console under the cap", async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gci-security-console-"));
    const imageDir = path.join(tmp, "image");
    const { manifest } = await extractImage((await guestImage()).file, imageDir);
    // A second initramfs archive after the image's: its /init replaces the image's, and floods.
    const overlay = path.join(tmp, "overlay");
    fs.mkdirSync(overlay);
    fs.writeFileSync(
      path.join(overlay, "init"),
      `#!/bin/sh\n${FLOOD.replace("sleep 60", "while :; do sleep 3600; done")}\n`,
      { mode: 0o755 },
    );
    const cpio = execFileSync("sh", ["-c", "echo init | cpio --quiet -o -H newc -R 0:0 | gzip -n"], {
      cwd: overlay,
    });
    fs.appendFileSync(path.join(imageDir, manifest.initrd!), cpio);
    const driver = new QemuDriver({ qemu: resolveQemu() });
    const handle = await driver.start({
      id: `sec-console-${randomUUID().slice(0, 8)}`,
      datacenter: "sec-dc",
      digest: "sha256:flood",
      imageDir,
      manifest: { ...manifest, ports: [] },
      vcpus: 1,
      memoryMiB: 256,
      runDir: path.join(tmp, "vm"),
    });
    try {
      await until(() => outputOf(handle).includes("flood-done"), 120_000, "flood-done on the console");
      const sizes = logSizes(handle);
      expect(Object.keys(sizes).sort()).toEqual(["console.log", "console.log.1"]);
      for (const [name, size] of Object.entries(sizes))
        expect(`${name}: ${size <= CAP_BYTES}`).toBe(`${name}: true`);
      expect(outputOf(handle)).toContain(`39999 ${"0".repeat(100)}`);
    } finally {
      await driver.stop(handle);
    }
  }, 180_000);
});
