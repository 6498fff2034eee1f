import { randomBytes } from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { GciError } from "../../../provider/common/errors";
import { extractImage, Manifest, MANIFEST_SCHEMA } from "../../../provider/image";
import { InstanceHandle, InstanceSpec, ProcessDriver } from "../../../provider/cluster/vm";
import { cgroupSupport } from "../../../provider/cluster/vm/cgroup";
import { BuiltImage, processImage } from "../../support/guest";

async function httpGet(address: string): Promise<string> {
  const response = await fetch(`http://${address}/`, { signal: AbortSignal.timeout(20_000) });
  return response.text();
}

/** Every live process (zombies are dead, only not reaped yet): pid and command line. */
function processTable(): { pid: number; cmdline: string }[] {
  const table: { pid: number; cmdline: string }[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
      if (stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")) continue;
      const cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").replace(/\0/g, " ");
      table.push({ pid: Number(entry), cmdline });
    } catch {
      // Ended while we looked.
    }
  }
  return table;
}

/** Processes of an instance: the pid namespace's init (child of the unshare process), then its child. */
function childOf(pid: number): number {
  if (!(pid > 0)) return 0;
  return Number(fs.readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(" ")[0]);
}

/**
 * The first process below `pid` whose command line holds `text`: the instance's own program,
 * not a short-lived helper of the sandbox's set-up (whose pid may already be another's).
 */
function descendantRunning(pid: number, text: string): number {
  let children: string[];
  try {
    children = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(" ").filter(Boolean);
  } catch {
    return 0; // Gone while we looked.
  }
  for (const child of children.map(Number)) {
    let cmdline = "";
    try {
      cmdline = fs.readFileSync(`/proc/${child}/cmdline`, "utf8");
    } catch {
      continue; // Gone while we looked.
    }
    if (cmdline.includes(text)) return child;
    const below = descendantRunning(child, text);
    if (below > 0) return below;
  }
  return 0;
}

/** The field `name` of /proc/<pid>/status. */
function status(pid: number, name: string): string {
  const line = fs
    .readFileSync(`/proc/${pid}/status`, "utf8")
    .split("\n")
    .find((l) => l.startsWith(`${name}:`));
  return (line ?? "").slice(name.length + 1).trim();
}

/** Process instances of the process-web recipe: sandboxed busybox httpd, a hundred at once. */
describe("ProcessDriver", () => {
  let tmp: string;
  let image: BuiltImage;
  let imageDir: string;
  let manifest: Manifest;
  const driver = new ProcessDriver();

  beforeAll(async () => {
    image = await processImage();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gci-vm-process-"));
    imageDir = path.join(tmp, "image");
    manifest = (await extractImage(image.file, imageDir, { expectedDigest: image.digest })).manifest;
  }, 300_000);

  afterAll(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  const specFor = (id: string): InstanceSpec => ({
    id,
    datacenter: "test-dc",
    digest: image.digest,
    imageDir,
    manifest,
    vcpus: 1,
    memoryMiB: 128,
    runDir: path.join(tmp, "instances", id),
  });

  it("runs 100 instances that each answer HTTP with their identity, and stops them all without strays", async () => {
    const tag = randomBytes(3).toString("hex");
    const specs = Array.from({ length: 100 }, (_, i) => specFor(`proc-${tag}-${i}`));
    const started = Date.now();
    const handles: InstanceHandle[] = [];
    try {
      handles.push(...(await Promise.all(specs.map((spec) => driver.start(spec)))));
      await Promise.all(handles.map((h) => driver.waitReady(h, 60_000)));
      console.log(`100 process instances ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);

      const addresses = handles.map((h) => h.addresses["80"]);
      expect(new Set(addresses).size).toBe(100);
      const bodies = await Promise.all(addresses.map(httpGet));
      expect(bodies.map((b) => b.trim())).toEqual(
        specs.map((s) => `name=${s.id} datacenter=test-dc digest=${image.digest}`),
      );
    } finally {
      const stopping = Date.now();
      await Promise.all(handles.map((h) => driver.stop(h)));
      console.log(`100 process instances stopped in ${((Date.now() - stopping) / 1000).toFixed(1)} s`);
    }
    expect(handles.filter((h) => driver.isRunning(h)).map((h) => h.id)).toEqual([]);
    // Nothing left: no sandbox (its command line names the run directory), no httpd on an instance port.
    const ports = handles.map((h) => h.addresses["80"]);
    const strays = processTable().filter(
      (p) => p.cmdline.includes(tmp) || ports.some((port) => p.cmdline.includes(port)),
    );
    expect(strays).toEqual([]);
  }, 170_000);

  it("sandboxes an instance (own pid namespace, own uid) and kills it whole when its supervisor dies", async () => {
    const spec = specFor(`proc-${randomBytes(3).toString("hex")}`);
    const handle = await driver.start(spec);
    try {
      await driver.waitReady(handle, 30_000);
      const init = childOf(handle.pid);
      const entrypoint = childOf(init);
      expect(fs.readlinkSync(`/proc/${entrypoint}/ns/pid`)).not.toBe(fs.readlinkSync("/proc/self/ns/pid"));
      expect(fs.readlinkSync(`/proc/${entrypoint}/ns/mnt`)).not.toBe(fs.readlinkSync("/proc/self/ns/mnt"));
      expect(status(init, "NSpid").split(/\s+/).pop()).toBe("1");
      // A uid of its own (see test/security/process-sandbox.test.ts), not root.
      expect(status(entrypoint, "Uid").split(/\s+/)).toEqual(Array(4).fill(String(handle.uid)));
      expect(handle.uid).toBeGreaterThan(0);
      expect(status(entrypoint, "CapEff")).toBe("0000000000000000");
      // The image stays as it was: the instance's root is an overlay in its own mount namespace.
      expect(fs.readdirSync(path.join(spec.runDir, "rootfs"))).toEqual([]);

      // kill -9 of the unshare process: the namespace's init gets SIGKILL, and with it everything.
      process.kill(handle.pid, "SIGKILL");
      const deadline = Date.now() + 5000;
      while (processTable().some((p) => p.cmdline.includes(spec.runDir)) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(processTable().filter((p) => p.cmdline.includes(spec.runDir))).toEqual([]);
      expect(driver.isRunning(handle)).toBe(false);
    } finally {
      await driver.stop(handle);
    }
  }, 60_000);

  describe("limits", () => {
    /** An instance of the same image running `script` (busybox sh) instead of its server. */
    const shell = (script: string, vcpus: number, memoryMiB: number): InstanceSpec => ({
      ...specFor(`proc-${randomBytes(3).toString("hex")}`),
      manifest: { ...manifest, entrypoint: ["bin/sh", "-c", script], ports: [] },
      vcpus,
      memoryMiB,
    });
    /** The value of `file` in whichever of the instance's cgroups has it (v1 splits them). */
    const cgroupFile = (handle: InstanceHandle, ...names: string[]): string => {
      for (const dir of handle.cgroups ?? []) {
        for (const name of names) {
          if (fs.existsSync(path.join(dir, name))) return fs.readFileSync(path.join(dir, name), "utf8");
        }
      }
      throw new Error(`no ${names.join(" or ")} in ${JSON.stringify(handle.cgroups)}`);
    };
    const stat = (text: string, key: string) => Number(new RegExp(`^${key} (\\d+)`, "m").exec(text)?.[1]);

    it("this host offers cgroups (set-up's machine runs as root with cpu and memory controllers)", () => {
      expect(cgroupSupport()).toMatchObject({ version: expect.any(Number) });
      expect(cgroupSupport().version).not.toBe(0);
    });

    it("holds an instance to its vCPUs: four busy loops on 1 vCPU are throttled", async () => {
      // Four loops want every core of this host (two), twice the instance's one vCPU.
      const spec = shell("for i in 1 2 3; do while :; do :; done & done; while :; do :; done", 1, 64);
      const handle = await driver.start(spec);
      try {
        expect(handle.cgroups?.length).toBeGreaterThan(0);
        // Every process of the instance is in its cgroups.
        let loops = 0;
        for (const deadline = Date.now() + 5000; !(loops > 0) && Date.now() < deadline;) {
          await new Promise((r) => setTimeout(r, 20));
          loops = descendantRunning(handle.pid, "while :");
        }
        const mine = fs.readFileSync(`/proc/${loops}/cgroup`, "utf8");
        for (const dir of handle.cgroups!) expect(mine).toContain(path.basename(dir));
        const quota = cgroupFile(handle, "cpu.cfs_quota_us", "cpu.max");
        expect(quota.trim().split(" ")[0]).toBe("100000");
        await new Promise((r) => setTimeout(r, 2000));
        expect(stat(cgroupFile(handle, "cpu.stat"), "nr_throttled")).toBeGreaterThan(0);
      } finally {
        await driver.stop(handle);
      }
      // Gone with it.
      for (const dir of handle.cgroups!) expect(fs.existsSync(dir)).toBe(false);
    }, 30_000);

    it("holds an instance to its memory: one that takes 300 MB of 64 MiB is ended by the kernel", async () => {
      const spec = shell(
        "x=$(/bin/busybox head -c 300000000 /dev/zero | /bin/busybox tr '\\0' a); /bin/sleep 60",
        1,
        64,
      );
      const handle = await driver.start(spec);
      try {
        const deadline = Date.now() + 20_000;
        while (driver.isRunning(handle) && Date.now() < deadline)
          await new Promise((r) => setTimeout(r, 100));
        expect(driver.isRunning(handle)).toBe(false);
        const limit = cgroupFile(handle, "memory.limit_in_bytes", "memory.max");
        expect(Number(limit)).toBe(64 * 1024 * 1024);
        const events = cgroupFile(handle, "memory.failcnt", "memory.events");
        expect(Number(events) > 0 || stat(events, "oom_kill") > 0).toBe(true);
      } finally {
        await driver.stop(handle);
      }
      for (const dir of handle.cgroups!) expect(fs.existsSync(dir)).toBe(false);
    }, 40_000);
  });

  it("validate refuses images the process driver cannot run, naming the fix", () => {
    const noEntrypoint = { schema: MANIFEST_SCHEMA, name: "bare", driver: "process" } as Manifest;
    expect(() => driver.validate(noEntrypoint)).toThrow(/image "bare" has no entrypoint/);
    const guest: Manifest = { schema: MANIFEST_SCHEMA, name: "g", driver: "qemu", kernel: "k", initrd: "i" };
    try {
      driver.validate(guest);
      throw new Error("validate accepted a qemu image");
    } catch (e) {
      expect(GciError.isInstance(e) && e.code).toBe("INVALID_ARGUMENT");
      expect((e as Error).message).toMatch(/is for the "qemu" driver, not "process"/);
    }
  });
});
