import { execFile, spawn } from "child_process";
import { createHash, randomBytes } from "crypto";
import * as fs from "fs";
import * as path from "path";
import { promisify } from "util";
import { GciError } from "../../provider/common/errors";
import { diskArgs, QemuDriver, resolveQemu } from "../../provider/cluster/vm/qemu";
import type { InstanceHandle } from "../../provider/cluster/vm";
import { consoleLine, ProbeGuests, probeGuests } from "./qemu-guests";

const execFileP = promisify(execFile);

/** What a guest booted with a disk printed about it, or the error that refused the boot. */
interface DiskOutcome {
  readonly refused?: GciError;
  readonly console: string[];
  readonly runDir: string;
}

/**
 * Issue 10, item 2 at boot: QEMU follows a qcow2 disk's backing file (a path, or a json:
 * description naming any driver) and opens drives as root, before -runas. Real QEMU guests of
 * the probe-guest image print the first bytes of their disk; the backing files are canaries
 * this test writes.
 */
describe("QEMU guests and their disks", () => {
  let guests: ProbeGuests;
  let canary: string;
  let canaryFile: string;
  const driver = new QemuDriver();

  beforeAll(async () => {
    guests = await probeGuests();
    canary = `GCI-CANARY-${randomBytes(6).toString("hex")}`;
    canaryFile = path.join(guests.tmp, "canary.txt");
    fs.writeFileSync(canaryFile, `${canary}=`.repeat(200).slice(0, 4096));
  }, 300_000);

  afterAll(() => guests?.remove());

  const qemuImg = (...args: string[]) => execFileP("qemu-img", ["create", "-q", "-f", "qcow2", ...args]);

  /** Boots the image with `disk` (a file in its folder) and reads the guest's report on it. */
  async function bootWithDisk(disk: string, cmdline = ""): Promise<DiskOutcome> {
    const spec = guests.spec({ manifest: { disk }, cmdline });
    let handle: InstanceHandle;
    try {
      handle = await driver.start(spec);
    } catch (e) {
      if (GciError.isInstance(e)) return { refused: e, console: [], runDir: spec.runDir };
      throw e;
    }
    try {
      const isRunning = () => driver.isRunning(handle);
      const lines = [await consoleLine(handle, /gci-probe: (disk|no disk)/, 120_000, isRunning)];
      if (cmdline.includes("gci.probe.write=")) {
        lines.push(await consoleLine(handle, /gci-probe: reread/, 60_000, isRunning));
      }
      return { console: lines, runDir: spec.runDir };
    } finally {
      await driver.stop(handle);
    }
  }

  const backings: [string, () => string][] = [
    ["a backing file", () => canaryFile],
    [
      "a json: backing",
      () => `json:${JSON.stringify({ driver: "raw", file: { driver: "file", filename: canaryFile } })}`,
    ],
  ];

  it.each(backings)(
    "refuses to boot a qcow2 disk with %s, naming the disk and the fix",
    async (_, backing) => {
      const disk = `backed-${randomBytes(3).toString("hex")}.qcow2`;
      await qemuImg("-u", "-b", backing(), "-F", "raw", path.join(guests.imageDir, disk), "4096");
      const outcome = await bootWithDisk(disk);
      // Before the fix, the guest booted and printed the host file it read through its disk.
      expect(outcome.console.join("\n")).not.toContain(canary);
      expect(outcome.refused?.code).toBe("INVALID_ARGUMENT");
      expect(outcome.refused?.message).toContain(
        `disk "${disk}" of image "probe-guest" is a qcow2 image with a backing file`,
      );
      expect(outcome.refused?.message).toContain("qemu-img convert -O qcow2");
      // Refused before QEMU started: not even the instance's folder was made.
      expect(fs.existsSync(outcome.runDir)).toBe(false);
    },
    180_000,
  );

  it("boots a self-contained qcow2 disk: the guest reads it, and its writes never reach the stored image", async () => {
    const content = `GCI-DISK-${randomBytes(6).toString("hex")}`;
    const raw = path.join(guests.tmp, "content.raw");
    fs.writeFileSync(
      raw,
      Buffer.concat([Buffer.from(`${content}=`), Buffer.alloc(1024 * 1024 - content.length - 1)]),
    );
    const disk = "clean.qcow2";
    await execFileP("qemu-img", [
      "convert",
      "-q",
      "-f",
      "raw",
      "-O",
      "qcow2",
      raw,
      path.join(guests.imageDir, disk),
    ]);
    const stored = sha256(path.join(guests.imageDir, disk));

    const outcome = await bootWithDisk(disk, "gci.probe.write=GCI-WROTE");
    expect(outcome.refused).toBeUndefined();
    expect(outcome.console[0]).toContain(`gci-probe: disk: ${content}=`);
    // The guest's write took (it reads it back), in a throwaway layer: the image is unchanged.
    expect(outcome.console[1]).toContain("gci-probe: reread: GCI-WROTE.");
    expect(sha256(path.join(guests.imageDir, disk))).toBe(stored);
  }, 180_000);

  it.each(backings)(
    "attaches a qcow2 disk with %s without opening it, even where no check ran",
    async (_, backing) => {
      // The driver's disk arguments, on QEMU started by hand: the boot check is not in the way.
      const disk = path.join(guests.imageDir, `unchecked-${randomBytes(3).toString("hex")}.qcow2`);
      await qemuImg("-u", "-b", backing(), "-F", "raw", disk, "4096");
      const runDir = fs.mkdtempSync(path.join(guests.tmp, "by-hand-"));
      const consoleFile = path.join(runDir, "console.log");
      const args = [
        ...["-accel", "tcg", "-m", "256", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"],
        ...["-kernel", path.join(guests.imageDir, guests.manifest.kernel!)],
        ...["-initrd", path.join(guests.imageDir, guests.manifest.initrd!)],
        ...["-append", `console=ttyS0 quiet panic=-1 ${guests.manifest.cmdline}`],
        ...["-serial", `file:${consoleFile}`],
        ...(await diskArgs(disk, runDir)),
      ];
      const qemu = spawn(resolveQemu(), args, { stdio: ["ignore", "ignore", "pipe"] });
      let stderr = "";
      qemu.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")));
      const exited = new Promise<void>((resolve) => qemu.once("exit", () => resolve()));
      let running = true;
      void exited.then(() => (running = false));
      const handle = { id: "by-hand", logFile: consoleFile } as InstanceHandle;
      try {
        const line = await consoleLine(handle, /gci-probe: (disk|no disk)/, 120_000, () => running).catch(
          (e: Error) => `${e.message} (QEMU said: ${stderr.trim()})`,
        );
        expect(line).not.toContain(canary);
        // Unallocated clusters of a qcow2 without a backing read as zeros.
        expect(line).toMatch(/^gci-probe: disk: \.{100}/);
      } finally {
        qemu.kill("SIGKILL");
        await exited;
      }
    },
    180_000,
  );
});

function sha256(file: string): string {
  return createHash("sha256").update(fs.readFileSync(file)).digest("hex");
}
