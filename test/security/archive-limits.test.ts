import { randomUUID } from "crypto";
import { createReadStream, createWriteStream, mkdtempSync, rmSync } from "fs";
import { tmpdir } from "os";
import { join } from "path";
import { pipeline } from "stream/promises";
import * as tar from "tar-stream";
import { MAX_PATHS, MAX_PATH_BYTES, MAX_TOTAL_PATH_BYTES } from "../../provider/image/paths";
import { QEMU_MANIFEST, failure } from "../unit/image/helpers";
import { testWorld, type TestWorld } from "../support/world";

/**
 * The path limits of provider/image/paths.ts, through a real cluster manager (UploadImage):
 * an archive whose paths add up past MAX_TOTAL_PATH_BYTES, and an entry whose path is one byte
 * over MAX_PATH_BYTES, are each refused naming the limit, and the cluster manager keeps serving.
 * The archives are written in the test's temp folder (the first is ~85 MiB: not committed).
 */

/** Longest path component Linux accepts (NAME_MAX): the long paths are built from such. */
const NAME_MAX = 255;
/** Components of the directory every entry of the first archive lies in. */
const SHARED_DIRS = 15;
/** Bytes of each path of the first archive; distinct paths, under MAX_PATH_BYTES. */
const BOMB_PATH_BYTES = 4000;
/** Entries of the first archive: enough that their paths pass MAX_TOTAL_PATH_BYTES, with margin. */
const BOMB_ENTRIES = Math.ceil((MAX_TOTAL_PATH_BYTES * 1.02) / BOMB_PATH_BYTES);

type Entry = { readonly name: string; readonly body: string };

/** A good image (manifest first, kernel, initrd) followed by `extra` empty files. */
function* imageEntries(extra: Iterable<string>): Generator<Entry> {
  yield { name: "manifest.json", body: JSON.stringify(QEMU_MANIFEST) };
  yield { name: "boot/vmlinuz", body: "kernel placeholder\n" };
  yield { name: "boot/initrd.img", body: "initramfs placeholder\n" };
  for (const name of extra) yield { name, body: "" };
}

/** Writes the entries to `file` with tar-stream (long paths go into pax headers). */
async function writeArchive(file: string, entries: Iterable<Entry>): Promise<void> {
  const pack = tar.pack();
  const written = pipeline(pack, createWriteStream(file));
  for (const e of entries) {
    await new Promise<void>((resolve, reject) =>
      pack.entry({ name: e.name, mtime: new Date(0), mode: 0o644 }, e.body, (err) =>
        err ? reject(err) : resolve(),
      ),
    );
  }
  pack.finalize();
  await written;
}

/**
 * BOMB_ENTRIES distinct paths of BOMB_PATH_BYTES in one shared directory: they add only
 * SHARED_DIRS directories between them, so MAX_PATHS is far off and only the byte total fires.
 */
function* totalBytesBomb(): Generator<string> {
  const dir = Array.from({ length: SHARED_DIRS }, (_, i) => String(i).padEnd(NAME_MAX, "d")).join("/");
  const nameBytes = BOMB_PATH_BYTES - dir.length - 1;
  for (let n = 0; n < BOMB_ENTRIES; n++) yield `${dir}/${String(n).padEnd(nameBytes, "f")}`;
}

/** A path of MAX_PATH_BYTES + 1 bytes: 16 components of NAME_MAX bytes (4,095 with the slashes), then "/p". */
function pathOverTheLimit(): string {
  return [...Array.from({ length: 16 }, (_, i) => String(i).padEnd(NAME_MAX, "p")), "p"].join("/");
}

describe("path limits of an uploaded archive, through a real cluster manager", () => {
  let world: TestWorld;
  let tmp: string;

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), "gci-archive-limits-"));
    world = await testWorld({ regions: { us: ["us-1"] } });
  });

  afterAll(async () => {
    await world?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  function upload(file: string) {
    return world.client("us-1").uploadImage(createReadStream(file), { request_id: randomUUID(), name: "" });
  }

  test(`paths adding up past ${MAX_TOTAL_PATH_BYTES} bytes are refused, naming the limit; the daemon keeps serving`, async () => {
    // The archive must reach the byte total well before MAX_PATHS, or that limit could fire instead.
    expect(BOMB_ENTRIES + SHARED_DIRS).toBeLessThan(MAX_PATHS / 10);
    const file = join(tmp, "total-path-bytes.tar");
    await writeArchive(file, imageEntries(totalBytesBomb()));
    const before = await world.client("us-1").listImages();
    const e = await failure(upload(file));
    expect(e.code).toBe("INVALID_ARGUMENT");
    expect(e.message).toContain(
      `past its limit of ${MAX_TOTAL_PATH_BYTES} bytes (64 MiB) of paths and link targets`,
    );
    expect(await world.client("us-1").checkHealth()).toBe("SERVING");
    expect(await world.client("us-1").listImages()).toEqual(before);
  }, 180_000);

  test(`an entry whose path is ${MAX_PATH_BYTES + 1} bytes is refused, naming the limit`, async () => {
    const long = pathOverTheLimit();
    expect(Buffer.byteLength(long)).toBe(MAX_PATH_BYTES + 1);
    const file = join(tmp, "long-path.tar");
    await writeArchive(file, imageEntries([long]));
    const e = await failure(upload(file));
    expect(e.code).toBe("INVALID_ARGUMENT");
    expect(e.message).toContain(`has a path longer than ${MAX_PATH_BYTES} bytes`);
    expect(await world.client("us-1").checkHealth()).toBe("SERVING");
  });
});
