/**
 * Issue 11, item 4: no VM group stays stuck. A group its cluster manager accepted and then died
 * on (fail point "start.accepted") is shown by `gci vm ls`, is finished when that cluster manager
 * restarts (or rolled back when its image is gone), and can be stopped through another
 * datacenter while its own is down. And instances that die come back: the watchdog restarts a
 * process instance whose supervisor was killed with kill -9.
 */

import { randomUUID } from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { waitForOperation } from "../../../provider/common/client";
import { extractImage, packDirectory } from "../../../provider/image";
import { isAlive } from "../../../provider/world";
import { runGci } from "../../support/engine";
import { guestImage } from "../../support/guest";
import { processesMentioning } from "../../support/procs";
import { instancePid, push } from "../../security/crash-support";
import { makeImage, testWorld, TestWorld, until } from "../../support/world";

interface ListedGroup {
  readonly requestId: string;
  readonly datacenter: string;
  readonly count: number;
  readonly running: number;
  readonly state: string;
}

/** `gci vm ls --json` through the real bin/gci. */
async function listed(
  world: TestWorld,
): Promise<{ vms: { id: string; requestId: string }[]; groups: ListedGroup[] }> {
  const ls = await runGci(["vm", "ls", "--world", world.dir, "--json"]);
  expect(ls).toMatchObject({ code: 0 });
  return JSON.parse(ls.stdout);
}

/** Whether the instance's HTTP service at `address` answers, naming `vmId`. */
async function answers(address: string, vmId: string): Promise<boolean> {
  try {
    const res = await fetch(`http://${address}/`, { signal: AbortSignal.timeout(5_000) });
    return (await res.text()).includes(vmId);
  } catch {
    // Refused or timed out: the instance is not serving (yet).
    return false;
  }
}

/** Live sandbox supervisors (the `unshare --kill-child` at the top of a process instance) of a run folder. */
function supervisorsOf(runDir: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
      if (
        state !== "Z" &&
        path.basename(argv[0]) === "unshare" &&
        argv.includes("--kill-child") &&
        argv.includes(path.join(runDir, "rootfs"))
      )
        pids.push(Number(entry));
    } catch {
      // The process ended while we looked.
    }
  }
  return pids;
}

describe("no VM group stays stuck; instances that die come back", () => {
  let world: TestWorld;
  let tmp: string;

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gci-stuck-"));
    world = await testWorld({ regions: { r: ["r-1", "r-2"] } });
  }, 120_000);

  afterAll(async () => {
    await world?.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  /** A distinct small process image, pushed to `dc`. */
  async function image(name: string, dc: string): Promise<{ file: string; digest: string }> {
    const built = await makeImage(tmp, { name, sizeMiB: 1 });
    return { file: built.file, digest: await push(world, dc, built.file) };
  }

  /** Arms "start.accepted" in `dc`, asks it for 2 instances of `digest`, and waits until it died there. */
  async function acceptThenDie(dc: string, digest: string): Promise<string> {
    world.kill(dc);
    await until(() => !isAlive(world.dc(dc).pid), 10_000, `the cluster manager of ${dc} to exit`);
    await world.restart(dc, { GCI_FAILPOINT: "start.accepted" });
    const requestId = randomUUID();
    const start = world.client(dc).startVms({
      request_id: requestId,
      image_digest: digest,
      datacenter: dc,
      count: 2,
      machine_size: "nano",
    });
    await expect(start).rejects.toMatchObject({ code: "UNAVAILABLE" });
    await until(
      () => !isAlive(world.dc(dc).pid),
      30_000,
      `the cluster manager of ${dc} to die at its fail point`,
    );
    expect(world.logs(dc).some((l) => l.event === "failpoint.hit")).toBe(true);
    return requestId;
  }

  async function groupOf(requestId: string) {
    const catalog = await world.catalog();
    try {
      return {
        group: await catalog.getVmGroup(requestId),
        vms: await catalog.listVms({ requestId }),
        groupsOfR1: (await catalog.listVmGroups("r-1")).map((g) => g.requestId),
      };
    } finally {
      await catalog.close();
    }
  }

  it("a group accepted before a crash is shown, finished on restart, and a repeat returns the same VMs", async () => {
    const { digest } = await image("resume", "r-1");
    const requestId = await acceptThenDie("r-1", digest);

    const stuck = await listed(world);
    expect(stuck.groups.filter((g) => g.requestId === requestId)).toEqual([
      expect.objectContaining({ requestId, datacenter: "r-1", count: 2, running: 0, state: "not started" }),
    ]);
    const human = await runGci(["vm", "ls", "--world", world.dir]);
    expect(human.stdout).toMatch(new RegExp(`${requestId}\\s+r-1\\s+\\S+\\s+0/2 running`));

    await world.restart("r-1");
    const vms = await until(
      async () => {
        const { vms } = await groupOf(requestId);
        return vms.length === 2 && vms.every((v) => v.state === "running") ? vms : undefined;
      },
      90_000,
      "the resumed group to run its 2 instances",
    );
    expect(world.logs("r-1").some((l) => l.event === "start.resumed" && l.requestId === requestId)).toBe(
      true,
    );

    const client = world.client("r-1");
    const again = await client.startVms({
      request_id: requestId,
      image_digest: digest,
      datacenter: "r-1",
      count: 2,
      machine_size: "nano",
    });
    const done = await waitForOperation(client, again, { timeoutMs: 60_000 });
    expect([...done.start_vms!.vm_ids].sort()).toEqual(vms.map((v) => v.id).sort());
    for (const vm of vms) {
      const runDir = path.join(world.dc("r-1").dataDir, "instances", vm.id);
      expect(supervisorsOf(runDir)).toEqual([instancePid(world, "r-1", vm.id)]);
      expect(await answers(vm.addresses["80"], vm.id)).toBe(true);
    }

    const stop = await runGci(["vm", "stop", requestId, "--world", world.dir]);
    expect(stop).toMatchObject({ code: 0 });
    expect(await groupOf(requestId)).toMatchObject({ group: undefined, vms: [] });
  }, 240_000);

  it("a group whose image left the catalog meanwhile is rolled back on restart, freeing its room and its image", async () => {
    const { file, digest } = await image("gone", "r-1");
    const requestId = await acceptThenDie("r-1", digest);
    const catalog = await world.catalog();
    try {
      await catalog.deleteImage(digest);
    } finally {
      await catalog.close();
    }

    await world.restart("r-1");
    await until(
      () => world.logs("r-1").some((l) => l.event === "start.rolled_back" && l.requestId === requestId),
      60_000,
      "the group to be rolled back",
    );
    expect(await groupOf(requestId)).toMatchObject({ group: undefined, vms: [] });
    expect((await groupOf(requestId)).groupsOfR1).not.toContain(requestId);
    expect((await listed(world)).groups.map((g) => g.requestId)).not.toContain(requestId);

    // Pushed again, the image is no longer held by the group: its removal is not refused.
    expect(await push(world, "r-1", file)).toBe(digest);
    const rm = await runGci(["image", "rm", digest, "--dc", "r-1", "--world", world.dir]);
    expect(rm).toMatchObject({ code: 0 });
  }, 240_000);

  it("a group whose cluster manager is kept dead is stopped through another datacenter; its image can then go", async () => {
    const { digest } = await image("dead", "r-2");
    const requestId = await acceptThenDie("r-2", digest);

    const stop = await runGci(["vm", "stop", requestId, "--via", "r-1", "--world", world.dir]);
    expect(stop).toMatchObject({ code: 0 });
    expect(await groupOf(requestId)).toMatchObject({ group: undefined, vms: [] });
    expect((await listed(world)).groups.map((g) => g.requestId)).not.toContain(requestId);
    expect(world.logs("r-1").some((l) => l.event === "stop.forgotten")).toBe(true);

    await world.restart("r-2");
    const rm = await runGci(["image", "rm", digest, "--dc", "r-2", "--world", world.dir]);
    expect(rm).toMatchObject({ code: 0 });
    expect(await groupOf(requestId)).toMatchObject({ group: undefined, vms: [] });
  }, 240_000);

  it("kill -9 of a process instance's supervisor: the watchdog runs it again, the group exact, no duplicate", async () => {
    const { digest } = await image("watched", "r-1");
    const requestId = randomUUID();
    const client = world.client("r-1");
    const op = await client.startVms({
      request_id: requestId,
      image_digest: digest,
      datacenter: "r-1",
      count: 2,
      machine_size: "nano",
    });
    const [victim, other] = (await waitForOperation(client, op, { timeoutMs: 120_000 })).start_vms!.vm_ids;
    const runDir = path.join(world.dc("r-1").dataDir, "instances", victim);
    const oldPid = instancePid(world, "r-1", victim)!;
    const otherPid = instancePid(world, "r-1", other)!;
    expect(supervisorsOf(runDir)).toEqual([oldPid]);

    process.kill(oldPid, "SIGKILL");
    const revived = await until(
      async () => {
        const pid = instancePid(world, "r-1", victim);
        if (pid === undefined || pid === oldPid || !isAlive(pid)) return undefined;
        const vm = await client.getVm(victim);
        const address = vm.addresses.find((a) => a.guest_port === 80)?.address;
        return vm.state === "running" && address !== undefined && (await answers(address, victim)) && pid;
      },
      60_000,
      "the killed instance to run and answer again",
    );

    expect(supervisorsOf(runDir)).toEqual([revived]);
    expect(instancePid(world, "r-1", other)).toBe(otherPid);
    const vms = await client.listVms(requestId);
    expect(vms.map((v) => [v.id, v.state])).toEqual([
      [victim, "running"],
      [other, "running"],
    ]);
    const logs = world.logs("r-1").filter((l) => l.requestId === requestId && l.id === victim);
    expect(logs.map((l) => l.event)).toEqual(expect.arrayContaining(["instance.died", "instance.revived"]));

    await waitForOperation(client, await client.stopVms(randomUUID(), requestId), { timeoutMs: 60_000 });
    expect(supervisorsOf(runDir)).toEqual([]);
  }, 240_000);

  it("kill -9 of a supervisor while its instance boots: the start reports it, and the watchdog runs it anyway", async () => {
    // A variant of the process image that takes 4 s to say it is ready: a window to kill it in.
    const root = fs.mkdtempSync(path.join(tmp, "slow-"));
    const base = await makeImage(tmp, { name: "slow-base", sizeMiB: 1 });
    const info = await extractImage(base.file, path.join(root, "fs"));
    const serve = path.join(root, "fs", "bin", "serve");
    fs.writeFileSync(serve, fs.readFileSync(serve, "utf8").replace("set -u\n", "set -u\nsleep 4\n"));
    fs.rmSync(path.join(root, "fs", "manifest.json"), { force: true });
    const file = path.join(tmp, "slow.tar");
    await packDirectory(path.join(root, "fs"), { ...info.manifest, name: "slow" }, file);
    const digest = await push(world, "r-1", file);
    const requestId = randomUUID();
    const client = world.client("r-1");
    const op = await client.startVms({
      request_id: requestId,
      image_digest: digest,
      datacenter: "r-1",
      count: 2,
      machine_size: "nano",
    });
    const victim = (await until(
      async () =>
        (await client.listVms(requestId)).find(
          (v) => v.state === "booting" && instancePid(world, "r-1", v.id),
        )?.id,
      60_000,
      "an instance of the group to be booting",
    ))!;
    process.kill(instancePid(world, "r-1", victim)!, "SIGKILL");
    // The start saw an instance die before it was ready: it says so (the other one runs).
    await expect(waitForOperation(client, op, { timeoutMs: 120_000 })).rejects.toThrow(/before it was ready/);
    // The group wants 2: the one that died while booting runs again, as one killed while running would.
    await until(
      async () => (await client.listVms(requestId)).filter((v) => v.state === "running").length === 2,
      60_000,
      "both instances of the group to run",
    );
    const runDir = path.join(world.dc("r-1").dataDir, "instances", victim);
    expect(supervisorsOf(runDir)).toHaveLength(1);
    await waitForOperation(client, await client.stopVms(randomUUID(), requestId), { timeoutMs: 60_000 });
  }, 240_000);

  it("kill -9 of a QEMU guest's process: the watchdog boots it again, one QEMU process for it", async () => {
    const digest = await push(world, "r-1", (await guestImage()).file);
    const requestId = randomUUID();
    const client = world.client("r-1");
    const op = await client.startVms({
      request_id: requestId,
      image_digest: digest,
      datacenter: "r-1",
      count: 1,
      machine_size: "micro",
    });
    const [guest] = (await waitForOperation(client, op, { timeoutMs: 300_000 })).start_vms!.vm_ids;
    const oldPid = instancePid(world, "r-1", guest)!;
    expect(processesMentioning(`gci.id=${guest} `)).toEqual([oldPid]);

    process.kill(oldPid, "SIGKILL");
    const revived = await until(
      async () => {
        const pid = instancePid(world, "r-1", guest);
        if (pid === undefined || pid === oldPid || !isAlive(pid)) return undefined;
        const vm = await client.getVm(guest);
        const address = vm.addresses.find((a) => a.guest_port === 80)?.address;
        return vm.state === "running" && address !== undefined && (await answers(address, guest)) && pid;
      },
      120_000,
      "the killed guest to boot and answer again",
    );
    expect(processesMentioning(`gci.id=${guest} `)).toEqual([revived]);
    expect((await client.listVms(requestId)).map((v) => [v.id, v.state])).toEqual([[guest, "running"]]);

    await waitForOperation(client, await client.stopVms(randomUUID(), requestId), { timeoutMs: 60_000 });
    await until(() => processesMentioning(`gci.id=${guest} `).length === 0, 30_000, "the guest to be gone");
  }, 420_000);
});
