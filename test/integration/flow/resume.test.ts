import { randomUUID } from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { CHUNK_SIZE } from "../../../provider/image";
import { runGci } from "../../support/engine";
import { LogLine, makeImage, testWorld, TestWorld, until } from "../../support/world";

const RATE = 16 * 1024 * 1024; // bytes/s: a 64 MiB image takes about 4 s, long enough to kill midway.

/**
 * kill -9 of either side during a transfer: after a restart the image arrives intact, chunks
 * verified before the kill are not sent again, and no placement says "present" early.
 */
describe("a transfer survives kill -9 of either cluster manager", () => {
  let world: TestWorld;
  let tmp: string;

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gci-resume-"));
    world = await testWorld({ regions: { us: ["us-1"], eu: ["eu-1"] } }, [
      "--max-transfer-rate",
      String(RATE),
    ]);
  });

  afterAll(async () => {
    await world?.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  async function pushAndStart(name: string) {
    const image = await makeImage(tmp, { name, sizeMiB: 64 });
    const push = await runGci(["image", "push", image.file, "--dc", "us-1", "--world", world.dir, "--json"]);
    expect(push.code).toBe(0);
    const requestId = randomUUID();
    const op = await world
      .client("us-1")
      .startVms({ request_id: requestId, image_digest: image.digest, datacenter: "eu-1", count: 1 });
    return { image, requestId, op };
  }

  /** Polls the eu-1 placement until `pred`; fails if it ever says "present" while `early` holds. */
  async function placementUntil(
    digest: string,
    pred: (done: number, total: number, state: string) => boolean,
  ) {
    const catalog = await world.catalog();
    try {
      return await until(
        async () => {
          const p = await catalog.getPlacement(digest, "eu-1");
          return p && pred(p.bytesDone, p.bytesTotal, p.state) ? p : undefined;
        },
        60_000,
        `placement of ${digest} in eu-1`,
      );
    } finally {
      await catalog.close();
    }
  }

  const sentTo = (lines: LogLine[], digest: string) =>
    lines.filter((l) => l.event === "transmit.sent" && l.digest === digest && l.to === "eu-1");

  it("reports progress at least once a second through the operations API", async () => {
    const { image, op } = await pushAndStart("progress");
    const eu1 = world.client("eu-1");
    const samples: number[] = [];
    for (let i = 0; i < 3; i++) {
      await new Promise((r) => setTimeout(r, 1000));
      const current = await eu1.getOperation(op.id);
      if (current.done) break;
      expect(current.progress?.phase).toBe("transfer");
      expect(current.progress?.bytes_total).toBe(image.sizeBytes);
      samples.push(current.progress!.bytes_done);
    }
    expect(samples.length).toBeGreaterThanOrEqual(2);
    for (let i = 1; i < samples.length; i++) expect(samples[i]).toBeGreaterThan(samples[i - 1]);
    await placementUntil(image.digest, (_d, _t, state) => state === "present");
  });

  it("resumes after kill -9 of the receiving cluster manager without re-sending verified chunks", async () => {
    const { image, requestId } = await pushAndStart("kill-receiver");
    const at = await placementUntil(image.digest, (done, total, state) => {
      expect(state).not.toBe("present");
      return total > 0 && done >= total * 0.4;
    });
    world.kill("eu-1");
    const catalog = await world.catalog();
    expect((await catalog.getPlacement(image.digest, "eu-1"))?.state).toBe("transferring");
    await catalog.close();

    await world.restart("eu-1");
    await placementUntil(image.digest, (_d, _t, state) => state === "present");

    const resumed = world
      .logs("eu-1")
      .filter((l) => l.event === "transfer.requested" && l.digest === image.digest);
    expect(resumed).toHaveLength(2);
    const held = resumed[1].heldChunks as number;
    expect(held * CHUNK_SIZE).toBeGreaterThanOrEqual(at.bytesDone - CHUNK_SIZE);
    const second = sentTo(world.logs("us-1"), image.digest).at(-1)!;
    expect(second.skipped).toBeGreaterThanOrEqual(Math.floor(at.bytesDone / CHUNK_SIZE));
    // Chunks verified before the kill are not sent again.
    expect(second.bytes).toBeGreaterThan(0);
    expect(second.bytes).toBeLessThanOrEqual(
      image.sizeBytes - Math.floor(at.bytesDone / CHUNK_SIZE) * CHUNK_SIZE,
    );
    expect(world.logs("eu-1").some((l) => l.event === "transfer.verified" && l.digest === image.digest)).toBe(
      true,
    );

    // The original request, repeated, finds its group and moves nothing.
    const again = await world
      .client("us-1")
      .startVms({ request_id: requestId, image_digest: image.digest, datacenter: "eu-1", count: 1 });
    const eu1 = world.client("eu-1");
    await until(async () => (await eu1.getOperation(again.id)).done, 10_000, "repeated start");
    expect(sentTo(world.logs("us-1"), image.digest)).toHaveLength(2);
    expect((await eu1.getImage(image.digest)).datacenters).toEqual(["eu-1", "us-1"]);
  });

  it("resumes after kill -9 of the sending cluster manager once it is back", async () => {
    const { image } = await pushAndStart("kill-sender");
    const at = await placementUntil(image.digest, (done, total) => total > 0 && done >= total * 0.4);
    world.kill("us-1");
    await new Promise((r) => setTimeout(r, 500));
    const catalog = await world.catalog();
    expect((await catalog.getPlacement(image.digest, "eu-1"))?.state).not.toBe("present");
    await catalog.close();

    await world.restart("us-1");
    await placementUntil(image.digest, (_d, _t, state) => state === "present");
    const second = sentTo(world.logs("us-1"), image.digest).at(-1)!;
    expect(second.cancelled).toBe(false);
    expect(second.skipped).toBeGreaterThanOrEqual(Math.floor(at.bytesDone / CHUNK_SIZE));
    // Chunks verified before the kill are not sent again.
    expect(second.bytes).toBeGreaterThan(0);
    expect(second.bytes).toBeLessThanOrEqual(
      image.sizeBytes - Math.floor(at.bytesDone / CHUNK_SIZE) * CHUNK_SIZE,
    );
  });
});
