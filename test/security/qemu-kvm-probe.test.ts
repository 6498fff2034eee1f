import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { resolveQemu } from "../../provider/cluster/vm/qemu";
import { DEFAULT_UID_DIR, UID_BASE } from "../../provider/cluster/vm/uid";
import { readWorld, stopWorld } from "../../provider/world";
import { runGci } from "../support/engine";
import { until } from "../support/world";

/** Whether this host's /dev/kvm opens (else the probe answers "tcg" without starting QEMU). */
function kvmOpens(): boolean {
  try {
    fs.closeSync(fs.openSync("/dev/kvm", "r+"));
    return true;
  } catch {
    return false;
  }
}

/**
 * Issue 10, item 5 for QEMU: the KVM probe (it boots a kernel under KVM to see whether KVM
 * works) runs when a cluster manager starts, not in a user's first boot, and under the same
 * confinement as guests. `gci world up` starts a real cluster manager with an environment of
 * the test's (jest's process.env does not reach child processes): the real QEMU is reached
 * through a script on PATH that writes down each command line, then runs it.
 */
describe("the KVM probe", () => {
  let dir: string;
  const worlds: string[] = [];

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "gci-security-kvm-probe-"));
  });

  afterAll(async () => {
    for (const world of worlds) await stopWorld(world, 3000);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /**
   * `gci world up --region us:<n>` with a QEMU that writes down its command lines, no answer
   * kept from an earlier probe, and no accelerator asked for.
   */
  async function upRecordingQemu(name: string, datacenters: number) {
    const bin = path.join(dir, name, "bin");
    const calls = path.join(dir, name, "qemu-calls.txt");
    fs.mkdirSync(bin, { recursive: true });
    fs.writeFileSync(
      path.join(bin, "qemu-system-x86_64"),
      `#!/bin/sh\nprintf '%s\\n' "$*" >>'${calls}'\nexec '${resolveQemu()}' "$@"\n`,
      { mode: 0o755 },
    );
    const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${bin}:${process.env.PATH ?? ""}` };
    env.GCI_CACHE = path.join(dir, name, "cache");
    delete env.GCI_QEMU_ACCEL;
    const worldDir = path.join(dir, name, "world");
    worlds.push(worldDir);
    const up = await runGci(
      ["world", "up", "--world", worldDir, "--region", `us:${datacenters}`],
      60_000,
      env,
    );
    expect(up.stderr).toBe("");
    const logs = (dc: number) =>
      fs
        .readFileSync(readWorld(worldDir)!.datacenters[dc].logFile, "utf8")
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as { event: string; accel?: string; reason?: string });
    const chosen = (dc: number) =>
      until(
        () => logs(dc).find((line) => line.event === "qemu.accelerator"),
        30_000,
        `cluster manager ${dc + 1} to log the accelerator its KVM probe chose at start`,
      );
    const probes = () =>
      (fs.existsSync(calls) ? fs.readFileSync(calls, "utf8") : "")
        .split("\n")
        .filter((line) => line.includes("-accel kvm"));
    return { chosen, probes };
  }

  it("runs when a cluster manager starts, under the guests' seccomp filter and a uid of its own", async () => {
    const world = await upRecordingQemu("one", 1);
    // No VM was asked for: before the fix nothing probed until a first boot.
    const chosen = await world.chosen(0);
    expect(["kvm", "tcg"]).toContain(chosen.accel);
    if (!kvmOpens()) {
      expect(chosen.reason).toMatch(/\/dev\/kvm cannot be opened/);
      return;
    }
    const probe = world.probes()[0];
    expect(probe).toContain("-sandbox on,obsolete=deny,spawn=deny,resourcecontrol=deny");
    const runas = probe?.match(/-runas (\d+):(\d+)/);
    expect(Number(runas?.[1])).toBeGreaterThanOrEqual(UID_BASE);
    expect(runas?.[2]).toBe(runas?.[1]);
    // The probe's uid was given back when it ended.
    expect(fs.existsSync(path.join(DEFAULT_UID_DIR, String(runas?.[1])))).toBe(false);
  }, 120_000);

  it("runs once on a host where several cluster managers start together, all sharing its answer", async () => {
    const world = await upRecordingQemu("three", 3);
    const answers = await Promise.all([0, 1, 2].map((dc) => world.chosen(dc)));
    expect(new Set(answers.map((a) => a.accel)).size).toBe(1);
    // Before the fix each cluster manager booted its own kernel under KVM, at the same time.
    expect(world.probes()).toHaveLength(kvmOpens() ? 1 : 0);
  }, 120_000);
});
