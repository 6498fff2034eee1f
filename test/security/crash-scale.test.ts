/**
 * Issue 10, item 7.1: ScaleVms changes a group's count in one compare-and-swap, so a cluster
 * manager killed as it records the new count leaves the group recorded (old or new count),
 * never running VMs that no group names.
 */

import { randomUUID } from "crypto";
import { waitForOperation } from "../../provider/common/client";
import { processImage } from "../support/guest";
import { testWorld, TestWorld } from "../support/world";
import { push, restartAfterFailpoint, restartWithFailpoint, startGroup } from "./crash-support";

describe("crash: ScaleVms killed while it records the new count", () => {
  let world: TestWorld;
  let digest: string;

  beforeAll(async () => {
    world = await testWorld({ regions: { r: ["r-1"] } });
    digest = await push(world, "r-1", (await processImage()).file);
  }, 120_000);

  afterAll(async () => {
    await world?.stop();
  });

  it("leaves the group recorded with its running VM, and a repeated scale converges", async () => {
    const start = randomUUID();
    const done = await startGroup(world, "r-1", digest, 1, start);
    const [vmId] = done.start_vms!.vm_ids;

    await restartWithFailpoint(world, "r-1", "scale.record");
    await expect(world.client("r-1").scaleVms(randomUUID(), start, 2)).rejects.toThrow();
    await restartAfterFailpoint(world, "r-1");

    const catalog = await world.catalog();
    try {
      const group = await catalog.getVmGroup(start);
      expect({ group: group?.requestId, vm: (await catalog.getVm(vmId))?.state }).toEqual({
        group: start,
        vm: "running",
      });
    } finally {
      await catalog.close();
    }

    const client = world.client("r-1");
    await waitForOperation(client, await client.scaleVms(randomUUID(), start, 2), { timeoutMs: 60_000 });
    expect((await client.listVms(start)).map((v) => v.state)).toEqual(["running", "running"]);
    await waitForOperation(client, await client.stopVms(randomUUID(), start), { timeoutMs: 60_000 });
  }, 180_000);
});
