/**
 * Shared steps of the crash and race tests: real cluster managers (test/support/world.ts),
 * real process instances, and fail points (provider/cluster/failpoint.ts) armed through the
 * environment of one daemon start.
 */

import { randomUUID } from "crypto";
import * as fs from "fs";
import { Operation, waitForOperation } from "../../provider/common/client";
import { isAlive } from "../../provider/world";
import { TestWorld, until } from "../support/world";

/** Uploads an archive to `dc` and returns its digest. */
export async function push(world: TestWorld, dc: string, file: string): Promise<string> {
  const image = await world.client(dc).uploadImage(fs.createReadStream(file), { request_id: randomUUID() });
  return image.digest;
}

/** Starts `count` nano process instances of `digest` in `dc` and waits until they run. */
export async function startGroup(
  world: TestWorld,
  dc: string,
  digest: string,
  count: number,
  requestId: string = randomUUID(),
): Promise<Operation> {
  const client = world.client(dc);
  const op = await client.startVms({
    request_id: requestId,
    image_digest: digest,
    datacenter: dc,
    count,
    machine_size: "nano",
  });
  return waitForOperation(client, op, { timeoutMs: 120_000 });
}

/** kill -9 of `dc`'s cluster manager, then a start of it with GCI_FAILPOINT=`failpoint`. */
export async function restartWithFailpoint(world: TestWorld, dc: string, failpoint: string): Promise<void> {
  world.kill(dc);
  await until(() => !isAlive(world.dc(dc).pid), 10_000, `the cluster manager of ${dc} to exit`);
  await world.restart(dc, { GCI_FAILPOINT: failpoint });
}

/** Waits until `dc`'s cluster manager died at its fail point, then starts it again, unarmed. */
export async function restartAfterFailpoint(world: TestWorld, dc: string): Promise<void> {
  await until(
    () => !isAlive(world.dc(dc).pid),
    30_000,
    `the cluster manager of ${dc} to die at its fail point`,
  );
  expect(world.logs(dc).some((l) => l.event === "failpoint.hit")).toBe(true);
  await world.restart(dc);
}

/** Whether a process instance's process still runs: its pid from the run folder's instance.json. */
export function instancePid(world: TestWorld, dc: string, vmId: string): number | undefined {
  const file = `${world.dc(dc).dataDir}/instances/${vmId}/instance.json`;
  if (!fs.existsSync(file)) return undefined;
  return (JSON.parse(fs.readFileSync(file, "utf8")) as { pid: number }).pid;
}
