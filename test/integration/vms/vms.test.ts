import { randomUUID } from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { waitForOperation } from "../../../provider/common/client";
import { runGci } from "../../support/engine";
import { guestImage, processImage } from "../../support/guest";
import { processesMentioning } from "../../support/procs";
import { testWorld, TestWorld, until } from "../../support/world";

/** GET http://<address>/ with a bound. */
async function httpGet(address: string): Promise<string> {
  const res = await fetch(`http://${address}/`, { signal: AbortSignal.timeout(10_000) });
  return res.text();
}

/**
 * The flow ends with real VMs: QEMU guests booted in the datacenter that just received the
 * image, their HTTP service answering on 127.0.0.1; process instances at scale; restarts.
 */
describe("VMs at the end of the flow", () => {
  let world: TestWorld;
  let tmp: string;
  let guest: { file: string; digest: string };

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gci-vms-"));
    guest = await guestImage();
    world = await testWorld({ regions: { us: ["us-1"], eu: ["eu-1"] }, vcpus: 128, memoryMiB: 65536 });
    const push = await runGci(["image", "push", guest.file, "--dc", "us-1", "--world", world.dir, "--json"]);
    expect(push.code).toBe(0);
  }, 600_000);

  afterAll(async () => {
    await world?.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  const startRequest = randomUUID();

  it("one call to us-1 ends with guests running in region eu, answering with their datacenter and image", async () => {
    const op = await world.client("us-1").startVms({
      request_id: startRequest,
      image_digest: guest.digest,
      region: "eu",
      count: 2,
      machine_size: "micro",
    });
    expect(op.datacenter).toBe("eu-1");
    const done = await waitForOperation(world.client("eu-1"), op, { timeoutMs: 300_000 });
    expect(done.start_vms?.transfer).toMatchObject({ source: "us-1", destination: "eu-1" });
    expect(done.start_vms?.vm_ids).toHaveLength(2);
    const vms = await world.client("us-1").listVms(startRequest);
    expect(vms.map((v) => [v.datacenter, v.state, v.kind])).toEqual([
      ["eu-1", "running", "vm"],
      ["eu-1", "running", "vm"],
    ]);
    for (const vm of vms) {
      const address = vm.addresses.find((a) => a.guest_port === 80)!.address;
      expect(address).toMatch(/^127\.0\.0\.1:\d+$/);
      const body = await httpGet(address);
      expect(body).toContain(vm.id);
      expect(body).toContain("eu-1");
      expect(body).toContain(guest.digest);
    }
    const logs = await world.client("eu-1").getVmLogs(vms[0].id);
    expect(logs).toContain("GCI-READY");
  });

  it("after kill -9 and restart of eu-1, its VMs are found again, none duplicated, and a repeat starts nothing", async () => {
    const before = await world.client("eu-1").listVms(startRequest);
    const qemuBefore = processesMentioning("qemu-system-x86_64").length;
    world.kill("eu-1");
    await world.restart("eu-1");
    const ls = await runGci(["vm", "ls", "--world", world.dir, "--json"]);
    const listed = (
      JSON.parse(ls.stdout) as { vms: { id: string; state: string; requestId: string }[] }
    ).vms.filter((v) => v.requestId === startRequest);
    expect(listed.map((v) => [v.id, v.state]).sort()).toEqual(before.map((v) => [v.id, "running"]).sort());
    for (const vm of before) expect(await httpGet(vm.addresses[0].address)).toContain(vm.id);

    const again = await world.client("us-1").startVms({
      request_id: startRequest,
      image_digest: guest.digest,
      region: "eu",
      count: 2,
      machine_size: "micro",
    });
    const done = await waitForOperation(world.client("eu-1"), again, { timeoutMs: 60_000 });
    expect([...(done.start_vms?.vm_ids ?? [])].sort()).toEqual(before.map((v) => v.id).sort());
    expect(processesMentioning("qemu-system-x86_64").length).toBe(qemuBefore);
  });

  it("refuses bad starts with their own errors and leaves no VM behind", async () => {
    const us1 = world.client("us-1");
    const base = { image_digest: guest.digest, datacenter: "eu-1" };
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [
        { count: 1, machine_size: "huge" },
        "INVALID_ARGUMENT",
        /machine size "huge" is unknown: use one of nano/,
      ],
      [{ count: 0, machine_size: "micro" }, "INVALID_ARGUMENT", /count 0 is out of range/],
      [{ count: 200, machine_size: "large" }, "RESOURCE_EXHAUSTED", /eu-1 has \d+ of 128 vCPUs .* free/],
    ];
    for (const [fields, code, message] of cases) {
      const requestId = randomUUID();
      await expect(us1.startVms({ request_id: requestId, ...base, ...fields })).rejects.toMatchObject({
        code,
        message: expect.stringMatching(message),
      });
      expect(await us1.listVms(requestId)).toEqual([]);
    }
    // An image that says "qemu" but has no kernel is refused at the door, so no VM can come of it.
    const src = fs.mkdtempSync(path.join(tmp, "nokernel-"));
    fs.writeFileSync(path.join(src, "initrd.img"), "x");
    const manifest = path.join(tmp, "nokernel.json");
    fs.writeFileSync(
      manifest,
      JSON.stringify({ schema: "gci.image/v1", name: "nokernel", driver: "qemu", initrd: "initrd.img" }),
    );
    const build = await runGci([
      "image",
      "build",
      src,
      "-o",
      path.join(tmp, "nokernel.tar"),
      "--manifest",
      manifest,
    ]);
    expect(build.code).toBe(1);
    expect(build.stderr).toMatch(/kernel/);
  });

  it("drives instances from the command line: start, logs, restart, stop", async () => {
    const image = await processImage();
    expect((await runGci(["image", "push", image.file, "--dc", "us-1", "--world", world.dir])).code).toBe(0);
    const requestId = randomUUID();
    const start = await runGci([
      ...["vm", "start", "--image", image.digest, "--region", "eu", "--count", "2", "--size", "nano"],
      ...["--request-id", requestId, "--world", world.dir, "--json"],
    ]);
    expect(start.code).toBe(0);
    const { vms } = JSON.parse(start.stdout) as { vms: { id: string; state: string; kind: string }[] };
    expect(vms.map((v) => [v.state, v.kind])).toEqual([
      ["running", "process"],
      ["running", "process"],
    ]);
    const logs = await runGci(["vm", "logs", vms[0].id, "--world", world.dir]);
    expect(logs.stdout).toContain("GCI-READY");

    const eu1 = world.client("eu-1");
    const restart = await eu1.restartVm(randomUUID(), vms[0].id);
    await waitForOperation(eu1, restart, { timeoutMs: 60_000 });
    const after = await eu1.getVm(vms[0].id);
    expect(after.state).toBe("running");
    expect(await httpGet(after.addresses[0].address)).toContain(vms[0].id);

    const stop = await runGci(["vm", "stop", requestId, "--world", world.dir]);
    expect(stop.code).toBe(0);
    expect(await eu1.listVms(requestId)).toEqual([]);
  });

  it("runs 100 process instances, stops them cleanly, and world down leaves no stray process", async () => {
    const image = await processImage();
    expect((await runGci(["image", "push", image.file, "--dc", "eu-1", "--world", world.dir])).code).toBe(0);
    const requestId = randomUUID();
    const eu1 = world.client("eu-1");
    const op = await eu1.startVms({
      request_id: requestId,
      image_digest: image.digest,
      datacenter: "eu-1",
      count: 100,
      machine_size: "nano",
    });
    const done = await waitForOperation(eu1, op, { timeoutMs: 240_000 });
    expect(done.start_vms?.vm_ids).toHaveLength(100);
    const vms = await eu1.listVms(requestId);
    expect(vms.filter((v) => v.state === "running" && v.kind === "process")).toHaveLength(100);
    const sample = await Promise.all(vms.slice(0, 10).map((v) => httpGet(v.addresses[0].address)));
    sample.forEach((body, i) => expect(body).toContain(vms[i].id));

    const stop = await eu1.stopVms(randomUUID(), requestId);
    await waitForOperation(eu1, stop, { timeoutMs: 120_000 });
    expect(await eu1.listVms(requestId)).toEqual([]);
    await until(
      () =>
        processesMentioning(path.join(world.dir, "dcs", "eu-1", "data", "rootfs", image.digest.slice(7)))
          .length === 0,
      10_000,
      "instances gone",
    );

    const down = await runGci(["world", "down", "--world", world.dir]);
    expect(down.code).toBe(0);
    await until(() => processesMentioning(world.dir).length === 0, 15_000, "no process of the world left");
  });
});
