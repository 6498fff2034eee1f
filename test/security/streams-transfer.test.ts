import { randomUUID } from "crypto";
import { createReadStream, mkdtempSync, rmSync } from "fs";
import { tmpdir } from "os";
import { join } from "path";
import { waitForOperation } from "../../provider/common/client";
import { makeImage, testWorld, until, type TestWorld } from "../support/world";

/**
 * A transfer whose source stops sending (SIGSTOP of its cluster manager: the kernel still
 * accepts and acknowledges, nothing answers) must not hold the receiver's lease forever: the
 * pull gives up within a bounded time and frees the lease, and once the source runs again a
 * repeated request completes.
 */

const MiB = 1024 * 1024;
/** Slow enough that the transfer is still running when the source is stopped. */
const RATE = 2 * MiB;
/** How long the receiver may take to give up: its stall limit, retries and backoff, with margin. */
const GIVE_UP_WITHIN_MS = 150_000;

describe("a transfer from a source that stops sending", () => {
  let world: TestWorld;
  let tmp: string;
  let stopped = false;

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), "gci-stall-"));
    world = await testWorld({ regions: { us: ["us-1"], eu: ["eu-1"] } }, [
      "--max-transfer-rate",
      String(RATE),
    ]);
  });

  afterAll(async () => {
    if (stopped) process.kill(world.dc("us-1").pid, "SIGCONT");
    await world?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  test("gives up, frees the lease, and completes when asked again after SIGCONT", async () => {
    const image = await makeImage(tmp, { name: "stall", sizeMiB: 24 });
    await world
      .client("us-1")
      .uploadImage(createReadStream(image.file), { request_id: randomUUID(), name: "stall" });
    const eu1 = world.client("eu-1");
    const first = await eu1.replicateImage(randomUUID(), image.digest, "eu-1");
    const catalog = await world.catalog();
    try {
      await until(
        async () => ((await catalog.getPlacement(image.digest, "eu-1"))?.bytesDone ?? 0) > 0,
        30_000,
        "the transfer into eu-1 to start",
      );
      process.kill(world.dc("us-1").pid, "SIGSTOP");
      stopped = true;

      const failed = await waitForOperation(eu1, first, { timeoutMs: GIVE_UP_WITHIN_MS }).then(
        () => undefined,
        (e: Error) => e,
      );
      expect(failed?.message).toMatch(/sent nothing for \d+ s/);
      const lease = await catalog.getLease(image.digest, "eu-1");
      expect(lease === undefined || lease.expiresAt < Date.now()).toBe(true);
      expect((await catalog.getPlacement(image.digest, "eu-1"))?.state).toBe("failed");

      process.kill(world.dc("us-1").pid, "SIGCONT");
      stopped = false;
      const again = await eu1.replicateImage(randomUUID(), image.digest, "eu-1");
      const done = await waitForOperation(eu1, again, { timeoutMs: 60_000 });
      expect(done.transfer).toMatchObject({ digest: image.digest, source: "us-1", destination: "eu-1" });
      expect((await catalog.getPlacement(image.digest, "eu-1"))?.state).toBe("present");
    } finally {
      await catalog.close();
    }
  }, 240_000);
});
