import { randomUUID } from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { replicaHandlers, ReplicaInputs } from "../../../provider/dynamic/replica";
import { CATALOG_OUTPUT_SCHEMA } from "../../../provider/dynamic/topology";
import { runGci } from "../../support/engine";
import { makeImage, testWorld, TestWorld, until } from "../../support/world";

const RATE = 16 * 1024 * 1024; // bytes/s: an 80 MiB image takes about 5 s, long enough to restart midway.

/**
 * Clients follow a datacenter, not an endpoint: when the cluster manager they wait on is
 * killed (kill -9) and comes back on another port, they find it again in the catalog, send
 * the forgotten request again (same request id) and finish, with exactly the VMs asked for.
 */
describe("clients survive a restart of the cluster manager they talk to", () => {
  let world: TestWorld;
  let tmp: string;

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gci-restart-client-"));
    world = await testWorld({ regions: { us: ["us-1"], eu: ["eu-1"] } }, [
      "--max-transfer-rate",
      String(RATE),
    ]);
  });

  afterAll(async () => {
    await world?.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  async function pushed(name: string) {
    const image = await makeImage(tmp, { name, sizeMiB: 80 });
    const push = await runGci(["image", "push", image.file, "--dc", "us-1", "--world", world.dir, "--json"]);
    expect(push.code).toBe(0);
    return image;
  }

  /** Waits until eu-1 has received part of the image, not all of it. */
  async function midTransfer(digest: string) {
    const catalog = await world.catalog();
    try {
      await until(
        async () => {
          const p = await catalog.getPlacement(digest, "eu-1");
          if (p?.state === "present") throw new Error(`the transfer of ${digest} ended before the kill`);
          return p && p.bytesDone > 0;
        },
        60_000,
        `the transfer of ${digest} into eu-1 to start`,
      );
    } finally {
      await catalog.close();
    }
  }

  /** kill -9 of eu-1, then a restart: it comes back on a new port, recorded in the catalog. */
  async function restartEu1() {
    const before = world.dc("eu-1").endpoint;
    world.kill("eu-1");
    await world.restart("eu-1");
    const catalog = await world.catalog();
    try {
      const after = (await catalog.getDatacenter("eu-1"))?.endpoint;
      return { before, after };
    } finally {
      await catalog.close();
    }
  }

  it("`gci vm start --via eu-1` exits 0 with the VMs after eu-1 restarted mid-transfer", async () => {
    const image = await pushed("cli");
    const requestId = randomUUID();
    // Started now, awaited after the restart: the CLI waits on eu-1 meanwhile.
    const cli = runGci(
      [
        "vm",
        "start",
        "--image",
        image.digest,
        "--dc",
        "eu-1",
        "--via",
        "eu-1",
        "--count",
        "2",
        "--size",
        "nano",
        "--request-id",
        requestId,
        "--timeout",
        "300",
        "--world",
        world.dir,
      ],
      300_000,
      { ...process.env, GCI_RETRY_SECONDS: "90" },
    );
    await midTransfer(image.digest);
    const { before, after } = await restartEu1();
    const run = await cli;
    expect({ code: run.code, stderr: run.code === 0 ? "" : run.stderr }).toEqual({ code: 0, stderr: "" });
    expect(after).not.toBe(before);
    expect(run.stderr).toMatch(/eu-1 unavailable, retrying \(\d+ s\)\.\.\./);
    expect(run.stdout).toContain(`request ${requestId}: 2 running in eu-1`);
    const catalog = await world.catalog();
    try {
      const vms = (await catalog.listVms({ requestId })).filter((v) => v.state === "running");
      expect(vms).toHaveLength(2);
      for (const vm of vms) expect(run.stdout).toContain(vm.id);
    } finally {
      await catalog.close();
    }
  });

  it("the ImageReplica handler's create finishes after eu-1 restarted while it waited", async () => {
    const image = await pushed("replica");
    const inputs: ReplicaInputs = {
      catalog: {
        schema: CATALOG_OUTPUT_SCHEMA,
        catalog: world.state.catalog,
        regions: ["us", "eu"],
        datacenters: world.state.datacenters.map((d) => ({
          name: d.name,
          region: d.region,
          endpoint: d.endpoint,
        })),
      },
      image: image.digest,
      datacenter: "eu-1",
      timeoutSeconds: 300,
      requestKey: "app/dev/gci:ImageReplica//restart",
      generation: 0,
    };
    const previous = process.env.GCI_RETRY_SECONDS;
    process.env.GCI_RETRY_SECONDS = "90";
    try {
      const created = replicaHandlers.create(inputs);
      await midTransfer(image.digest);
      const { before, after } = await restartEu1();
      expect(after).not.toBe(before);
      const result = await created;
      expect(result.id).toBe(`${image.digest}@eu-1`);
      expect(result.outs.transfer).toMatchObject({ destination: "eu-1" });
    } finally {
      if (previous === undefined) delete process.env.GCI_RETRY_SECONDS;
      else process.env.GCI_RETRY_SECONDS = previous;
    }
    const catalog = await world.catalog();
    try {
      expect((await catalog.getPlacement(image.digest, "eu-1"))?.state).toBe("present");
    } finally {
      await catalog.close();
    }
  });
});
