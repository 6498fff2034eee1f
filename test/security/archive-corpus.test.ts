import { randomUUID } from "crypto";
import { createReadStream, mkdtempSync, readFileSync, rmSync } from "fs";
import { tmpdir } from "os";
import { join } from "path";
import { packDirectory } from "../../provider/image";
import {
  CORPUS,
  CORPUS_DIR,
  OVER_UPLOAD_MAX,
  QEMU_MANIFEST,
  failure,
  makeImageDir,
} from "../unit/image/helpers";
import { testWorld, type TestWorld } from "../support/world";

/**
 * The bad-archive corpus (scripts/make-bad-archives.ts) pushed through real cluster managers
 * with UploadImage: each archive is refused with its own message and nothing is recorded; the
 * path bomb leaves the daemon serving and small; an archive over the datacenter's upload
 * maximum is refused naming the limit.
 */

const MiB = 1024 * 1024;
/** The peak resident size a cluster manager fed the path bomb may reach. */
const RSS_LIMIT_BYTES = 256 * MiB;

/** VmHWM (peak resident set) of a process, in bytes, from /proc/<pid>/status. */
function peakRss(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const line = /^VmHWM:\s+(\d+) kB$/m.exec(status);
  if (line === null) throw new Error(`no VmHWM line in /proc/${pid}/status`);
  return Number(line[1]) * 1024;
}

function upload(world: TestWorld, dc: string, file: string) {
  return world.client(dc).uploadImage(createReadStream(file), { request_id: randomUUID(), name: "" });
}

describe("the bad-archive corpus through a real cluster manager", () => {
  let world: TestWorld;

  beforeAll(async () => {
    world = await testWorld({ regions: { us: ["us-1"] } });
  });

  afterAll(async () => {
    await world?.stop();
  });

  test.each(Object.entries(CORPUS))("UploadImage refuses %s with its own message", async (file, message) => {
    const before = await world.client("us-1").listImages();
    const e = await failure(upload(world, "us-1", join(CORPUS_DIR, file)));
    expect(e.code).toBe("INVALID_ARGUMENT");
    expect(e.message).toContain(message);
    expect(await world.client("us-1").listImages()).toEqual(before);
  });

  test("a cluster manager fed the path bomb stays SERVING, its peak RSS under 256 MiB", async () => {
    // Health and memory are asserted before the refusal, so a daemon that took the bomb shows them.
    const refused = failure(upload(world, "us-1", join(CORPUS_DIR, "path-bomb.tar")));
    await refused.then(
      () => undefined,
      () => undefined,
    );
    expect(await world.client("us-1").checkHealth()).toBe("SERVING");
    const rss = peakRss(world.dc("us-1").pid);
    console.log(
      JSON.stringify({ daemonPeakRssMiB: +(rss / MiB).toFixed(1), limitMiB: RSS_LIMIT_BYTES / MiB }),
    );
    expect(rss).toBeLessThan(RSS_LIMIT_BYTES);
    expect((await refused).message).toContain(CORPUS["path-bomb.tar"]);
  });
});

describe("a datacenter's upload maximum (--max-upload-bytes)", () => {
  let world: TestWorld;
  let tmp: string;

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), "gci-upload-max-"));
    world = await testWorld({ regions: { lim: ["lim-1"] } }, [
      "--max-upload-bytes",
      String(OVER_UPLOAD_MAX.maxUploadBytes),
    ]);
  });

  afterAll(async () => {
    await world?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  test("refuses an archive over it, naming the limit, the value and the fix", async () => {
    const e = await failure(upload(world, "lim-1", join(CORPUS_DIR, OVER_UPLOAD_MAX.file)));
    expect(e.code).toBe("RESOURCE_EXHAUSTED");
    expect(e.message).toContain(OVER_UPLOAD_MAX.message);
    expect(e.message).toContain("lim-1");
    expect(await world.client("lim-1").listImages()).toEqual([]);
  });

  test("still takes an image under it", async () => {
    const dir = await makeImageDir(join(tmp, "small"));
    const packed = await packDirectory(dir, QEMU_MANIFEST, join(tmp, "small.tar"));
    expect(packed.sizeBytes).toBeLessThan(OVER_UPLOAD_MAX.maxUploadBytes);
    const image = await upload(world, "lim-1", join(tmp, "small.tar"));
    expect(image.digest).toBe(packed.digest);
  });
});
