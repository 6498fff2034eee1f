/**
 * Issue 10, item 7.4: a repeated StartVms whose converge fails on one instance keeps the group
 * that was running (its record and its running VMs); only a group the failing request itself
 * created, and that never ran, is rolled back.
 */

import { randomUUID } from "crypto";
import { waitForOperation } from "../../provider/common/client";
import { isAlive } from "../../provider/world";
import { processImage } from "../support/guest";
import { testWorld, TestWorld, until } from "../support/world";
import { instancePid, push, restartWithFailpoint, startGroup } from "./crash-support";

/** Whether the instance's HTTP service at `address` answers, naming `vmId`. */
async function answers(address: string, vmId: string): Promise<boolean> {
  try {
    const res = await fetch(`http://${address}/`, { signal: AbortSignal.timeout(5_000) });
    return (await res.text()).includes(vmId);
  } catch {
    // Refused or timed out: the instance is not serving.
    return false;
  }
}

describe("crash: a StartVms whose converge fails", () => {
  let world: TestWorld;
  let digest: string;

  beforeAll(async () => {
    world = await testWorld({ regions: { r: ["r-1"] } });
    digest = await push(world, "r-1", (await processImage()).file);
  }, 120_000);

  afterAll(async () => {
    await world?.stop();
  });

  const startAgain = (requestId: string) =>
    world.client("r-1").startVms({
      request_id: requestId,
      image_digest: digest,
      datacenter: "r-1",
      count: 2,
      machine_size: "nano",
    });

  it("on a repeat, for one instance, keeps the running group: its record and its running VM", async () => {
    const start = randomUUID();
    const done = await startGroup(world, "r-1", digest, 2, start);
    const [first, second] = done.start_vms!.vm_ids;
    const firstAddress = (await world.client("r-1").getVm(first)).addresses[0].address;
    // The second instance dies while its cluster manager is down (a live one's watchdog would
    // restart it); a repeated start must start it again, and that start fails.
    world.kill("r-1");
    await until(() => !isAlive(world.dc("r-1").pid), 10_000, "the cluster manager to exit");
    process.kill(instancePid(world, "r-1", second)!, "SIGKILL");
    await until(() => !isAlive(instancePid(world, "r-1", second)!), 10_000, "the instance to die");
    await world.restart("r-1", { GCI_FAILPOINT: "instance.start=error" });

    const client = world.client("r-1");
    await expect(waitForOperation(client, await startAgain(start), { timeoutMs: 60_000 })).rejects.toThrow(
      /fail point/,
    );

    const catalog = await world.catalog();
    try {
      expect({
        group: (await catalog.getVmGroup(start))?.count,
        vms: (await catalog.listVms({ requestId: start })).map((v) => [v.id, v.state]),
        firstAnswers: await answers(firstAddress, first),
      }).toEqual({
        group: 2,
        vms: [
          [first, "running"],
          [second, "failed"],
        ],
        firstAnswers: true,
      });
    } finally {
      await catalog.close();
    }

    // Unarmed again, a repeat (a new operation after the restart) brings the failed one back.
    world.kill("r-1");
    await until(() => !isAlive(world.dc("r-1").pid), 10_000, "the cluster manager to exit");
    await world.restart("r-1");
    await waitForOperation(world.client("r-1"), await startAgain(start), { timeoutMs: 60_000 });
    expect((await world.client("r-1").listVms(start)).map((v) => v.state)).toEqual(["running", "running"]);
    const stop = await world.client("r-1").stopVms(randomUUID(), start);
    await waitForOperation(world.client("r-1"), stop, { timeoutMs: 60_000 });
  }, 180_000);

  it("on a new request, rolls back the group it created and that never ran", async () => {
    const start = randomUUID();
    await restartWithFailpoint(world, "r-1", "instance.start=error");
    const client = world.client("r-1");
    await expect(waitForOperation(client, await startAgain(start), { timeoutMs: 60_000 })).rejects.toThrow(
      /fail point/,
    );
    const catalog = await world.catalog();
    try {
      expect({
        group: await catalog.getVmGroup(start),
        vms: await catalog.listVms({ requestId: start }),
      }).toEqual({ group: undefined, vms: [] });
    } finally {
      await catalog.close();
    }
  }, 120_000);
});
