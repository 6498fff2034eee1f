import { randomUUID } from "crypto";
import { mkdtempSync, readFileSync, rmSync } from "fs";
import { tmpdir } from "os";
import { join } from "path";
import { PassThrough } from "stream";
import { MAX_CONCURRENT_UPLOADS } from "../../provider/cluster/server";
import { STREAM_IDLE_MS, STREAM_MIN_RATE } from "../../provider/cluster/transfer";
import { packDirectory } from "../../provider/image";
import { QEMU_MANIFEST, failure, makeImageDir } from "../unit/image/helpers";
import { testWorld, type TestWorld } from "../support/world";

/**
 * Uploads that hold a cluster manager without finishing: one that stops sending is cut off
 * after the idle limit, one that trickles once under the minimum rate; uploads beyond the
 * concurrent maximum are refused at once.
 */

/** How long the test waits for the cluster manager to end an upload: the idle limit, with margin. */
const ENDED_WITHIN_MS = STREAM_IDLE_MS + 20_000;
/** Writes of the trickling upload, 2 s apart: past its first minute, with margin. */
const TRICKLE_STEPS = 45;

describe("uploads that do not finish", () => {
  let world: TestWorld;
  let tmp: string;
  let archive: Buffer;

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), "gci-stalled-upload-"));
    world = await testWorld({ regions: { us: ["us-1"] } });
    const dir = await makeImageDir(join(tmp, "img"));
    await packDirectory(dir, QEMU_MANIFEST, join(tmp, "img.tar"));
    archive = readFileSync(join(tmp, "img.tar"));
  });

  afterAll(async () => {
    await world?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  /** An upload that sends the archive's first 16 KiB, then nothing; `source` cancels it. */
  function stalledUpload(): { source: PassThrough; result: Promise<unknown> } {
    const source = new PassThrough();
    const result = world.client("us-1").uploadImage(source, { request_id: randomUUID(), name: "" });
    result.catch(() => undefined); // each test awaits the results it asserts on
    source.write(archive.subarray(0, 16 * 1024));
    return { source, result };
  }

  /** Resolves with the first result settled, or "still running" after `ms`. */
  function firstSettled(results: Promise<unknown>[], ms: number): Promise<unknown> {
    let timer!: NodeJS.Timeout;
    const timeout = new Promise((resolve) => (timer = setTimeout(() => resolve("still running"), ms)));
    const settled = results.map((r) =>
      r.then(
        (v) => v,
        (e: unknown) => e,
      ),
    );
    return Promise.race([...settled, timeout]).finally(() => clearTimeout(timer));
  }

  test(
    "an upload that stops sending is ended after the idle limit, naming it",
    async () => {
      const { source, result } = stalledUpload();
      const outcome = await firstSettled([result], ENDED_WITHIN_MS);
      source.destroy(new Error("test over"));
      expect(outcome).not.toBe("still running");
      const e = await failure(result);
      expect(e.code).toBe("DEADLINE_EXCEEDED");
      expect(e.message).toContain(`sent nothing for ${STREAM_IDLE_MS / 1000} s`);
    },
    ENDED_WITHIN_MS + 10_000,
  );

  test(
    "an upload that trickles is ended once it falls under the minimum rate",
    async () => {
      const { source, result } = stalledUpload();
      // 1 KiB every 2 s keeps it under the idle limit, far under 256 KiB/s: ended after its first minute.
      let outcome: unknown = "still running";
      for (let i = 0; i < TRICKLE_STEPS && outcome === "still running"; i++) {
        source.write(archive.subarray(16 * 1024 + i * 1024, 16 * 1024 + (i + 1) * 1024));
        outcome = await firstSettled([result], 2_000);
      }
      source.destroy(new Error("test over"));
      expect(outcome).not.toBe("still running");
      const e = await failure(result);
      expect(e.code).toBe("DEADLINE_EXCEEDED");
      expect(e.message).toContain(`slower than the minimum of ${STREAM_MIN_RATE / 1024} KiB/s`);
    },
    TRICKLE_STEPS * 2_000 + 10_000,
  );

  test(`uploads beyond ${MAX_CONCURRENT_UPLOADS} at once are refused, naming the limit`, async () => {
    const uploads = Array.from({ length: MAX_CONCURRENT_UPLOADS + 1 }, () => stalledUpload());
    try {
      // The refused one ends at once; the others only when the idle limit ends them.
      const first = await firstSettled(
        uploads.map((u) => u.result),
        STREAM_IDLE_MS / 2,
      );
      expect(first).not.toBe("still running");
      const refused = await failure(Promise.reject(first));
      expect(refused.code).toBe("RESOURCE_EXHAUSTED");
      expect(refused.message).toContain(`${MAX_CONCURRENT_UPLOADS} uploads at once`);
    } finally {
      for (const u of uploads) u.source.destroy(new Error("test over"));
    }
  });
});
