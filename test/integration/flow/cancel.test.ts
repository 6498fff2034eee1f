/**
 * Issue 11, item 5: a removal of an image from a datacenter cancels the transfer of it into
 * that datacenter, a transfer the removal overtook while its receiver was down is not resumed,
 * and the chunks of cancelled and failed transfers are collected (see provider/cluster/collector.ts).
 */

import { randomUUID } from "crypto";
import * as fs from "fs";
import * as path from "path";
import { waitForOperation } from "../../../provider/common/client";
import { isAlive } from "../../../provider/world";
import { runGci } from "../../support/engine";
import { push } from "../../security/crash-support";
import { makeImage, testWorld, TestWorld, until } from "../../support/world";

const RATE = 4 * 1024 * 1024; // bytes/s: a 32 MiB image takes about 8 s, long enough to act during it.
const SIZE_MIB = 32;
/** Short, so a test sees the collector free a failed transfer's chunks. */
const GRACE_MS = 2000;
/** Short, so a transfer whose source stays dead gives up soon. */
const RETRY_MS = 3000;

/** The sha256 of every chunk of `digest`, from the record in `dc`'s store. */
function chunksOf(world: TestWorld, dc: string, digest: string): string[] {
  const record = path.join(world.dc(dc).dataDir, "images", "images", `${digest.slice(7)}.json`);
  const entry = JSON.parse(fs.readFileSync(record, "utf8")) as { chunks: { sha256: string }[] };
  return entry.chunks.map((c) => c.sha256);
}

/** Chunk files in `dc`'s store, by sha256, with their sizes. */
function chunkFiles(world: TestWorld, dc: string): Map<string, number> {
  const top = path.join(world.dc(dc).dataDir, "images", "chunks");
  const files = new Map<string, number>();
  for (const prefix of fs.existsSync(top) ? fs.readdirSync(top) : []) {
    for (const name of fs.readdirSync(path.join(top, prefix))) {
      files.set(name, fs.statSync(path.join(top, prefix, name)).size);
    }
  }
  return files;
}

/** Bytes of chunk files in `dc`'s store that no stored image of it references. */
function unreferencedBytes(world: TestWorld, dc: string): number {
  const records = path.join(world.dc(dc).dataDir, "images", "images");
  const referenced = new Set<string>();
  for (const name of fs.existsSync(records) ? fs.readdirSync(records) : []) {
    if (!name.endsWith(".json")) continue;
    const entry = JSON.parse(fs.readFileSync(path.join(records, name), "utf8")) as {
      chunks: { sha256: string }[];
    };
    for (const c of entry.chunks) referenced.add(c.sha256);
  }
  let bytes = 0;
  for (const [sha, size] of chunkFiles(world, dc)) if (!referenced.has(sha)) bytes += size;
  return bytes;
}

/** How many of `digest`'s chunks `dc`'s store holds. */
function heldChunksOf(world: TestWorld, digest: string, dc: string): number {
  const files = chunkFiles(world, dc);
  return chunksOf(world, "us-1", digest).filter((sha) => files.has(sha)).length;
}

describe("a removal cancels transfers; chunks of failed transfers are collected", () => {
  let world: TestWorld;

  beforeAll(async () => {
    world = await testWorld({ regions: { us: ["us-1"], eu: ["eu-1"] } }, [
      "--max-transfer-rate",
      String(RATE),
      "--chunk-grace-ms",
      String(GRACE_MS),
      "--transfer-retry-ms",
      String(RETRY_MS),
    ]);
  }, 60_000);

  afterAll(async () => {
    await world?.stop();
  });

  /** Pushes a fresh image to us-1 and replicates it into eu-1; resolves once eu-1 holds some of it. */
  async function replicateUntilPartial(name: string) {
    const image = await makeImage(world.dir, { name, sizeMiB: SIZE_MIB });
    const digest = await push(world, "us-1", image.file);
    const op = await world.client("eu-1").replicateImage(randomUUID(), digest, "eu-1");
    const catalog = await world.catalog();
    try {
      await until(
        async () => {
          const p = await catalog.getPlacement(digest, "eu-1");
          return p?.state === "transferring" && p.bytesDone > 0 && p.bytesDone < p.bytesTotal / 2;
        },
        60_000,
        `part of ${name} to reach eu-1`,
      );
    } finally {
      await catalog.close();
    }
    return { digest, op, sizeBytes: image.sizeBytes };
  }

  async function placementIn(digest: string, dc: string) {
    const catalog = await world.catalog();
    try {
      return await catalog.getPlacement(digest, dc);
    } finally {
      await catalog.close();
    }
  }

  it("DeleteImage in the receiving datacenter cancels the transfer: no placement, no chunks", async () => {
    const { digest, op } = await replicateUntilPartial("cancel-on-delete");
    const removed = await world.client("eu-1").deleteImage(randomUUID(), digest);
    expect(removed.datacenters).toEqual(["us-1"]);

    // The operation waiting on the transfer fails, naming the removal.
    await expect(waitForOperation(world.client("eu-1"), op, { timeoutMs: 60_000 })).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
      message: expect.stringContaining(
        `image ${digest} was removed from eu-1 while it was being transferred`,
      ),
    });
    // The source saw the receiver go: the transfer stopped, not just its placement.
    await until(
      () => world.logs("us-1").some((l) => l.event === "transmit.sent" && l.digest === digest),
      30_000,
      "us-1 to end the transmit",
    );
    const sent = world.logs("us-1").find((l) => l.event === "transmit.sent" && l.digest === digest)!;
    expect(sent.cancelled).toBe(true);

    expect(await placementIn(digest, "eu-1")).toBeUndefined();
    expect((await world.client("eu-1").getImage(digest)).datacenters).toEqual(["us-1"]);
    expect(heldChunksOf(world, digest, "eu-1")).toBe(0);
    expect(unreferencedBytes(world, "eu-1")).toBe(0);
  }, 120_000);

  it("a receiver killed mid-transfer, the image removed, then restarted: not resumed, chunks collected", async () => {
    const { digest } = await replicateUntilPartial("removed-while-down");
    world.kill("eu-1");
    await until(() => !isAlive(world.dc("eu-1").pid), 10_000, "eu-1 to exit");
    expect(heldChunksOf(world, digest, "eu-1")).toBeGreaterThan(0);
    const catalog = await world.catalog();
    try {
      // `gci image rm --dc eu-1` cannot reach a dead datacenter; the catalog record goes instead.
      expect((await catalog.getPlacement(digest, "eu-1"))?.state).toBe("transferring");
      await catalog.deletePlacement(digest, "eu-1");
    } finally {
      await catalog.close();
    }

    await world.restart("eu-1");
    await until(() => heldChunksOf(world, digest, "eu-1") === 0, 30_000, "eu-1 to collect the chunks");
    expect(unreferencedBytes(world, "eu-1")).toBe(0);
    expect(
      world.logs("eu-1").filter((l) => l.event === "transfer.requested" && l.digest === digest),
    ).toHaveLength(1);
    expect(await placementIn(digest, "eu-1")).toBeUndefined();
    expect((await world.client("eu-1").getImage(digest)).datacenters).toEqual(["us-1"]);
  }, 120_000);

  it("`gci image rm --all` during a transfer removes the image everywhere, receiver first", async () => {
    const { digest, op } = await replicateUntilPartial("rm-all");
    const rm = await runGci(["image", "rm", digest, "--all", "--world", world.dir]);
    expect({ code: rm.code, stderr: rm.stderr }).toEqual({ code: 0, stderr: "" });
    expect(rm.stdout.indexOf(`from eu-1`)).toBeLessThan(rm.stdout.indexOf(`from us-1`));
    await expect(waitForOperation(world.client("eu-1"), op, { timeoutMs: 60_000 })).rejects.toMatchObject({
      message: expect.stringContaining("was removed from eu-1 while it was being transferred"),
    });
    const catalog = await world.catalog();
    try {
      expect({
        image: await catalog.getImage(digest),
        placements: await catalog.listPlacements(digest),
      }).toEqual({
        image: undefined,
        placements: [],
      });
    } finally {
      await catalog.close();
    }
    expect(unreferencedBytes(world, "eu-1")).toBe(0);
    expect(chunkFiles(world, "eu-1").size).toBe(0);
  }, 120_000);

  it("a transfer whose source stays dead fails and leaves no chunks once the grace is over", async () => {
    const { digest, op } = await replicateUntilPartial("source-dead");
    // Known before the source goes: its layout, from its store.
    const layout = chunksOf(world, "us-1", digest);
    expect(layout.length).toBeGreaterThan(1);
    world.kill("us-1");
    await until(() => !isAlive(world.dc("us-1").pid), 10_000, "us-1 to exit");
    try {
      await expect(waitForOperation(world.client("eu-1"), op, { timeoutMs: 90_000 })).rejects.toThrow();
      expect((await placementIn(digest, "eu-1"))?.state).toBe("failed");
      await until(() => heldChunksOf(world, digest, "eu-1") === 0, 30_000, "eu-1 to collect the chunks");
      expect(unreferencedBytes(world, "eu-1")).toBe(0);
    } finally {
      await world.restart("us-1");
    }
  }, 180_000);
});
