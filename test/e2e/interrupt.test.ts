import * as fs from "fs";
import * as path from "path";
import { REPO } from "../support/engine";
import { guestImage } from "../support/guest";
import { TestWorld, testWorld, until } from "../support/world";
import { StackRunner, httpGet, killTree, processVariant, stackRunner, summaryOf, tempDir } from "./support";

const MiB = 1024 * 1024;

/**
 * `pulumi up` killed with SIGKILL (the gci process, the pulumi CLI and the dynamic-provider
 * plugin, all at once) in the middle of an image transfer and in the middle of booting; the
 * next `up` finds the request the cluster manager already accepted, through the idempotency
 * key derived from the resource, and ends with the expected VMs, no duplicates, the image
 * intact. Transfers are slowed down (--max-transfer-rate) so there is a middle to kill in.
 */
describe("pulumi up killed mid-transfer and mid-boot, then run again", () => {
  let world: TestWorld;
  let dir: string;
  let stack: StackRunner;

  beforeAll(async () => {
    dir = tempDir("interrupt");
    world = await testWorld({ regions: { us: ["us-1"], eu: ["eu-1"] } }, [
      "--max-transfer-rate",
      String(4 * MiB),
    ]);
    fs.mkdirSync(path.join(dir, "project"));
    fs.writeFileSync(path.join(dir, "project", "Pulumi.yaml"), "name: interrupted\nruntime: nodejs\n");
    fs.symlinkSync(path.join(REPO, "node_modules"), path.join(dir, "project", "node_modules"));
    stack = stackRunner(path.join(dir, "project"), "dev", path.join(dir, "state"));
  }, 60_000);

  afterAll(async () => {
    await stack?.run("destroy").catch(() => undefined);
    await world?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  /** The program: one image (a directory packed by the SDK, or an archive) in us-1, a group of `count` in eu. */
  function writeProgram(image: string, count: number, machineSize: string, extra = ""): void {
    fs.writeFileSync(
      path.join(dir, "project", "index.ts"),
      `import * as gci from ${JSON.stringify(path.join(REPO, "sdk"))};
const catalog = gci.Catalog.fromWorld(${JSON.stringify(world.dir)});
const image = new gci.Image("img", { catalog, datacenter: "us-1", ${image} });
const group = new gci.VirtualMachineGroup("web", { catalog, image, region: "eu", count: ${count}, machineSize: ${JSON.stringify(machineSize)}${extra} });
export const digest = image.digest;
export const requestId = group.requestId;
export const vmIds = group.vmIds;
export const urls = group.urls;
`,
    );
  }

  async function groupsAndVms() {
    const catalog = await world.catalog();
    try {
      return { groups: await catalog.listVmGroups(), vms: await world.client("eu-1").listVms() };
    } finally {
      await catalog.close();
    }
  }

  type Up = { outputs: { digest: string; requestId: string; vmIds: string[]; urls: string[] } };

  it("recovers from a kill in the middle of the image transfer", async () => {
    // 2 MiB of process image plus 24 MiB of padding: about 6 s on the wire at 4 MiB/s.
    const { stage } = await processVariant(dir, "slow-web", 24 * MiB);
    const manifest = JSON.parse(
      fs.readFileSync(path.join(REPO, "examples/images/process-web/manifest.json"), "utf8"),
    );
    writeProgram(
      `directory: ${JSON.stringify(stage)}, manifest: ${JSON.stringify({ ...manifest, name: "slow-web" })}`,
      2,
      "nano",
    );

    const up = stack.start("up");
    const catalog = await world.catalog();
    let placement;
    try {
      placement = await until(
        async () =>
          (await catalog.listPlacements()).find(
            (p) => p.datacenter === "eu-1" && p.state === "transferring" && p.bytesDone > 0,
          ),
        120_000,
        "the transfer into eu-1 to start",
      );
    } finally {
      await catalog.close();
    }
    killTree(up.pid);
    await up.done;
    expect(placement.bytesDone).toBeLessThan(placement.bytesTotal);
    const during = await groupsAndVms();
    expect(during.groups).toHaveLength(1);
    const acceptedId = during.groups[0].requestId;

    await stack.cancel();
    const { outputs } = summaryOf<Up>(await stack.run("up"));
    expect(outputs.requestId).toBe(acceptedId);
    expect(outputs.vmIds).toHaveLength(2);
    const after = await groupsAndVms();
    expect(after.groups.map((g) => g.requestId)).toEqual([acceptedId]);
    expect(after.vms.map((v) => v.id).sort()).toEqual([...outputs.vmIds].sort());
    const image = await world.client("eu-1").getImage(outputs.digest);
    expect(image.datacenters).toEqual(["eu-1", "us-1"]);
    for (const url of outputs.urls) expect(await httpGet(url)).toContain("eu-1");

    summaryOf(await stack.run("destroy"));
  }, 170_000);

  it("records a half-done create (its wait ran out) and finishes it on the next up", async () => {
    // 50 MiB at 4 MiB/s: longer than the group's 10 s bound.
    const { stage } = await processVariant(dir, "slower-web", 48 * MiB);
    const manifest = JSON.parse(
      fs.readFileSync(path.join(REPO, "examples/images/process-web/manifest.json"), "utf8"),
    );
    writeProgram(
      `directory: ${JSON.stringify(stage)}, manifest: ${JSON.stringify({ ...manifest, name: "slower-web" })}`,
      1,
      "nano",
      ", timeoutSeconds: 10",
    );
    const first = await stack.run("up");
    expect(first.code).not.toBe(0);
    expect(first.stderr).toMatch(/VM group vmg-[0-9a-f-]+ in eu-1 is not complete \(0 of 1 VMs run\)/);
    expect(first.stderr).toContain("Run `pulumi up` again to finish it.");
    const during = await groupsAndVms();
    expect(during.groups).toHaveLength(1);

    const { outputs } = summaryOf<Up>(await stack.run("up"));
    expect(outputs.requestId).toBe(during.groups[0].requestId);
    expect(outputs.vmIds).toHaveLength(1);
    expect((await groupsAndVms()).groups).toHaveLength(1);
    summaryOf(await stack.run("destroy"));
  }, 170_000);

  it("recovers from a kill while the qemu guests boot", async () => {
    const guest = await guestImage();
    writeProgram(`file: ${JSON.stringify(guest.file)}`, 2, "micro");

    const up = stack.start("up");
    await until(
      async () =>
        (await world.client("eu-1").listVms()).some(
          (v) => v.state === "booting" || v.state === "provisioning",
        ),
      150_000,
      "a guest to be booting in eu-1",
    );
    killTree(up.pid);
    await up.done;
    const during = await groupsAndVms();
    expect(during.groups).toHaveLength(1);

    await stack.cancel();
    const { outputs } = summaryOf<Up>(await stack.run("up"));
    expect(outputs.requestId).toBe(during.groups[0].requestId);
    expect(outputs.vmIds).toHaveLength(2);
    const after = await groupsAndVms();
    expect(after.groups).toHaveLength(1);
    expect(after.vms.filter((v) => v.state === "running")).toHaveLength(2);
    expect(after.vms).toHaveLength(2);
    for (const url of outputs.urls) expect(await httpGet(url, 20_000)).toContain("eu-1");

    summaryOf(await stack.run("destroy"));
    expect(await groupsAndVms()).toEqual({ groups: [], vms: [] });
  }, 200_000);
});
