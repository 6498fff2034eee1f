/**
 * Issue 10, item 7.2: DeleteImage forgets the placement before it deletes the bytes, so a
 * crash between the two never leaves a "present" copy without bytes; and a copy an instance
 * runs from, or a transfer reads, is not deleted.
 */

import { randomUUID } from "crypto";
import * as fs from "fs";
import * as path from "path";
import { waitForOperation } from "../../provider/common/client";
import { makeImage, testWorld, TestWorld, until } from "../support/world";
import { push, restartAfterFailpoint, restartWithFailpoint, startGroup } from "./crash-support";

/** Whether `dc`'s image store holds the image's record (its bytes verified and kept). */
const stored = (world: TestWorld, dc: string, digest: string): boolean =>
  fs.existsSync(path.join(world.dc(dc).dataDir, "images", "images", `${digest.slice(7)}.json`));

describe("crash: DeleteImage killed between its two steps", () => {
  let world: TestWorld;

  beforeAll(async () => {
    world = await testWorld({ regions: { r: ["r-1"] } });
  }, 60_000);

  afterAll(async () => {
    await world?.stop();
  });

  it("leaves no placement 'present' without bytes; the leftover bytes are collected at restart", async () => {
    const image = await makeImage(world.dir, { name: "delete-crash", sizeMiB: 2 });
    const digest = await push(world, "r-1", image.file);
    expect(stored(world, "r-1", digest)).toBe(true);

    await restartWithFailpoint(world, "r-1", "delete-image.between");
    await expect(world.client("r-1").deleteImage(randomUUID(), digest)).rejects.toThrow();
    await restartAfterFailpoint(world, "r-1");

    const catalog = await world.catalog();
    try {
      const placement = await catalog.getPlacement(digest, "r-1");
      expect({ placement: placement?.state, stored: stored(world, "r-1", digest) }).toEqual({
        placement: undefined,
        stored: false,
      });
    } finally {
      await catalog.close();
    }
  }, 120_000);
});

describe("DeleteImage refuses a copy still in use", () => {
  let world: TestWorld;

  beforeAll(async () => {
    // Slow peer transfers (2 MiB/s), so a delete lands while one is reading the copy.
    world = await testWorld({ regions: { r: ["r-1", "r-2"] } }, ["--max-transfer-rate", String(2 << 20)]);
  }, 60_000);

  afterAll(async () => {
    await world?.stop();
  });

  it("while a transfer reads it: FAILED_PRECONDITION naming the receiver and the fix", async () => {
    const image = await makeImage(world.dir, { name: "delete-during-transfer", sizeMiB: 16 });
    const digest = await push(world, "r-1", image.file);
    const replicate = await world.client("r-2").replicateImage(randomUUID(), digest, "r-2");
    await until(
      () => world.logs("r-1").some((l) => l.event === "transmit.requested" && l.digest === digest),
      30_000,
      "r-1 to start sending the image",
    );
    await expect(world.client("r-1").deleteImage(randomUUID(), digest)).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
      message: expect.stringMatching(/transfer to r-2.*retry/s),
    });
    await waitForOperation(world.client("r-2"), replicate, { timeoutMs: 60_000 });
    expect(stored(world, "r-1", digest) && stored(world, "r-2", digest)).toBe(true);
  }, 120_000);

  it("while an instance runs from it, even with no group record: FAILED_PRECONDITION naming the VM", async () => {
    const image = await makeImage(world.dir, { name: "delete-while-running", sizeMiB: 1 });
    const digest = await push(world, "r-1", image.file);
    const start = randomUUID();
    const done = await startGroup(world, "r-1", digest, 1, start);
    const [vmId] = done.start_vms!.vm_ids;
    const catalog = await world.catalog();
    try {
      // A record lost to a crash (see crash-scale.test.ts): the instance runs on regardless.
      const group = (await catalog.getVmGroup(start))!;
      await catalog.deleteVmGroup(start);
      await expect(world.client("r-1").deleteImage(randomUUID(), digest)).rejects.toMatchObject({
        code: "FAILED_PRECONDITION",
        message: expect.stringContaining(vmId),
      });
      expect(stored(world, "r-1", digest)).toBe(true);
      await catalog.putVmGroupIfAbsent(group);
    } finally {
      await catalog.close();
    }
    const client = world.client("r-1");
    await waitForOperation(client, await client.stopVms(randomUUID(), start), { timeoutMs: 60_000 });
  }, 120_000);
});
