import { createHash, randomBytes } from "crypto";
import { createReadStream, createWriteStream } from "fs";
import { chmod, readFile, readdir, writeFile } from "fs/promises";
import { join } from "path";
import { PassThrough, Readable } from "stream";
import { pipeline } from "stream/promises";
import { CHUNK_SIZE, type ImageEntry, ImageStore, packDirectory } from "../../../provider/image";
import {
  CORPUS,
  CORPUS_DIR,
  QEMU_MANIFEST,
  failure,
  listTree,
  makeImageDir,
  removeSandbox,
  sandbox,
} from "./helpers";

let box: string;
let root: string;
beforeEach(async () => {
  box = await sandbox();
  root = join(box, "store");
});
afterEach(async () => {
  await removeSandbox(box);
});

const sha256 = (data: Buffer): string => createHash("sha256").update(data).digest("hex");

/** Packs a small image into the sandbox (outside the store) and returns its path and digest. */
async function goodArchive(name = "good", kernel?: Buffer): Promise<{ path: string; digest: string }> {
  const dir = await makeImageDir(join(box, `${name}-dir`), kernel);
  const path = join(box, `${name}.tar`);
  const { digest } = await packDirectory(dir, QEMU_MANIFEST, path);
  return { path, digest };
}

/** Everything in the sandbox lies in the store or in what the test itself made there. */
async function expectNothingOutsideStore(allowed: readonly string[] = []): Promise<void> {
  const outside = (await listTree(box)).filter(
    (p) => p !== "store" && !p.startsWith("store/") && !allowed.some((a) => p === a || p.startsWith(`${a}/`)),
  );
  expect(outside).toEqual([]);
}

async function records(): Promise<string[]> {
  return readdir(join(root, "images"));
}

async function concat(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(part as Buffer);
  return Buffer.concat(parts);
}

describe("ImageStore.ingest", () => {
  test("stores a good image as verified chunks and a record, and reads it back", async () => {
    const { path, digest } = await goodArchive();
    const store = new ImageStore(root, { chunkSize: 16 * 1024 });
    const entry = await store.ingest(createReadStream(path), { name: "tiny-linux", expectedDigest: digest });
    const bytes = await readFile(path);
    expect(entry.digest).toBe(digest);
    expect(entry.sizeBytes).toBe(bytes.length);
    expect(entry.chunks.length).toBe(Math.ceil(bytes.length / (16 * 1024)));
    expect(entry.chunks.reduce((n, c) => n + c.size, 0)).toBe(bytes.length);
    expect(await records()).toEqual([`${digest.slice(7)}.json`]);
    expect(await store.has(digest)).toBe(true);
    expect(await store.get(digest)).toEqual(entry);
    expect(await store.list()).toEqual([entry]);
    expect(await concat(await store.openArchive(digest))).toEqual(bytes);
    // A second store on the same root finds the record on disk.
    expect(await new ImageStore(root).get(digest)).toEqual(entry);
    expect(await readdir(join(root, "tmp"))).toEqual([]);
  });

  test("is idempotent: ingesting the same archive again changes nothing", async () => {
    const { path } = await goodArchive();
    const store = new ImageStore(root, { chunkSize: 16 * 1024 });
    const first = await store.ingest(path);
    const chunks = await store.listChunks();
    expect(await store.ingest(path)).toEqual(first);
    expect(await store.listChunks()).toEqual(chunks);
  });

  test.each(Object.entries(CORPUS))(
    "refuses %s, recording nothing and writing nothing outside",
    async (file, message) => {
      const store = new ImageStore(root, { chunkSize: 1024 });
      const e = await failure(store.ingest(createReadStream(join(CORPUS_DIR, file))));
      expect(e.code).toBe("INVALID_ARGUMENT");
      expect(e.message).toContain(message);
      await expectNothingOutsideStore();
      expect(await records()).toEqual([]);
      expect(await store.list()).toEqual([]);
      // The chunks this ingest wrote were removed again.
      expect(await store.listChunks()).toEqual(new Set());
    },
  );

  test("refuses a digest mismatch with DATA_LOSS and records nothing", async () => {
    const { path, digest } = await goodArchive();
    const store = new ImageStore(root, { chunkSize: 16 * 1024 });
    const wrong = `sha256:${"f".repeat(64)}`;
    const e = await failure(store.ingest(path, { expectedDigest: wrong }));
    expect(e.code).toBe("DATA_LOSS");
    expect(e.message).toContain(wrong);
    expect(e.message).toContain(digest);
    expect(await records()).toEqual([]);
    expect(await store.listChunks()).toEqual(new Set());
    await expectNothingOutsideStore(["good-dir", "good.tar"]);
  });

  test("refuses a malformed expected digest, naming it", async () => {
    const { path } = await goodArchive();
    const e = await failure(new ImageStore(root).ingest(path, { expectedDigest: "sha256:XYZ" }));
    expect(e.code).toBe("INVALID_ARGUMENT");
    expect(e.message).toContain('"sha256:XYZ"');
  });

  test("refuses an archive whose manifest names another image than expected", async () => {
    const { path } = await goodArchive();
    const e = await failure(new ImageStore(root).ingest(path, { name: "other" }));
    expect(e.message).toContain('manifest names the image "tiny-linux", but "other" was expected');
    expect(await records()).toEqual([]);
  });

  test("a truncated upload leaves no image record", async () => {
    const { path } = await goodArchive();
    const bytes = await readFile(path);
    const store = new ImageStore(root, { chunkSize: 8 * 1024 });
    const e = await failure(store.ingest(Readable.from([bytes.subarray(0, Math.floor(bytes.length / 2))])));
    expect(e.message).toContain("archive is truncated");
    expect(await records()).toEqual([]);
    expect(await store.listChunks()).toEqual(new Set());
  });

  test("a failing source rejects with its own error and leaves no image record", async () => {
    const { path } = await goodArchive();
    const bytes = await readFile(path);
    async function* broken(): AsyncIterable<Buffer> {
      yield bytes.subarray(0, 50_000);
      throw new Error("connection reset");
    }
    const store = new ImageStore(root, { chunkSize: 8 * 1024 });
    await expect(store.ingest(broken())).rejects.toThrow("connection reset");
    expect(await records()).toEqual([]);
    expect(await store.listChunks()).toEqual(new Set());
  });

  test("refuses a bad upload without waiting for the sender to finish", async () => {
    const upload = new PassThrough();
    upload.write(await readFile(join(CORPUS_DIR, "abs-path.tar")));
    // The sender never ends the stream; the store must answer anyway.
    const store = new ImageStore(root, { chunkSize: 1024 });
    const e = await failure(store.ingest(upload));
    expect(e.message).toContain(CORPUS["abs-path.tar"]);
    expect(upload.destroyed).toBe(true);
    expect(await store.listChunks()).toEqual(new Set());
  }, 10_000);

  test("keeps chunks shared by two images once", async () => {
    // Same manifest and kernel; b only adds a small file that sorts last, so with fixed-size
    // chunks every chunk before the difference is shared.
    const kernel = randomBytes(512 * 1024);
    const a = await goodArchive("a", kernel);
    const bDir = await makeImageDir(join(box, "b-dir"), kernel);
    await writeFile(join(bDir, "var", "empty", "zz"), "a late difference\n");
    const bPath = join(box, "b.tar");
    await packDirectory(bDir, QEMU_MANIFEST, bPath);

    const store = new ImageStore(root, { chunkSize: 32 * 1024 });
    const ea = await store.ingest(a.path);
    const eb = await store.ingest(bPath);
    const shared = ea.chunks.filter((c) => eb.chunks.some((d) => d.sha256 === c.sha256));
    expect(shared.length).toBeGreaterThan(ea.chunks.length * 0.8);
    const unique = new Set([...ea.chunks, ...eb.chunks].map((c) => c.sha256));
    expect(await store.listChunks()).toEqual(unique);
    const files = (await listTree(join(root, "chunks"))).filter((p) => p.includes("/"));
    expect(files.length).toBe(unique.size);

    // Deleting one image keeps the chunks the other still uses.
    expect(await store.delete(ea.digest)).toBe(true);
    expect(await store.delete(ea.digest)).toBe(false);
    expect(await store.listChunks()).toEqual(new Set(eb.chunks.map((c) => c.sha256)));
    expect(await concat(await store.openArchive(eb.digest))).toEqual(await readFile(bPath));
    expect(await records()).toEqual([`${eb.digest.slice(7)}.json`]);
  });

  test("ingests a 64 MiB random image with the default chunk size", async () => {
    const dir = join(box, "big-dir");
    await makeImageDir(dir, Buffer.from("small kernel"));
    // Write the random disk in 1 MiB pieces, so the test itself holds little in memory.
    await pipeline(
      Readable.from(
        (function* () {
          for (let i = 0; i < 64; i++) yield randomBytes(1024 * 1024);
        })(),
      ),
      createWriteStream(join(dir, "disk.img")),
    );
    const path = join(box, "big.tar");
    const packed = await packDirectory(dir, { ...QEMU_MANIFEST, disk: "disk.img" }, path);
    expect(packed.sizeBytes).toBeGreaterThan(64 * 1024 * 1024);

    const store = new ImageStore(root);
    const entry = await store.ingest(createReadStream(path), { expectedDigest: packed.digest });
    expect(entry.chunks.length).toBe(Math.ceil(packed.sizeBytes / CHUNK_SIZE));
    expect(entry.chunks.slice(0, -1).every((c) => c.size === CHUNK_SIZE)).toBe(true);
    const hash = createHash("sha256");
    for await (const part of await store.openArchive(packed.digest)) hash.update(part as Buffer);
    expect(`sha256:${hash.digest("hex")}`).toBe(packed.digest);
  });
});

describe("ImageStore chunks", () => {
  test("putChunk stores a chunk once and rejects data that does not match its name", async () => {
    const store = new ImageStore(root);
    const data = randomBytes(1000);
    const sha = sha256(data);
    await store.putChunk(sha, data);
    await store.putChunk(sha, data);
    expect(await store.hasChunk(sha)).toBe(true);
    expect(await store.readChunk(sha)).toEqual(data);
    expect(await store.listChunks()).toEqual(new Set([sha]));

    const other = sha256(Buffer.from("other"));
    const e = await failure(store.putChunk(other, data));
    expect(e.code).toBe("DATA_LOSS");
    expect(e.message).toContain(`chunk ${other} does not match its data`);
    expect(e.message).toContain(sha);
    expect(await store.hasChunk(other)).toBe(false);
    expect(await readdir(join(root, "tmp"))).toEqual([]);
  });

  test("rejects malformed chunk names, naming them", async () => {
    const store = new ImageStore(root);
    const e = await failure(store.putChunk("sha256:abc", Buffer.from("x")));
    expect(e.code).toBe("INVALID_ARGUMENT");
    expect(e.message).toContain('"sha256:abc"');
    await expect(store.hasChunk("../../etc/passwd")).rejects.toThrow("is not valid");
  });

  test("readChunk reports a corrupt chunk as DATA_LOSS and a missing one as NOT_FOUND", async () => {
    const store = new ImageStore(root);
    const data = randomBytes(1000);
    const sha = sha256(data);
    await store.putChunk(sha, data);
    const file = join(root, "chunks", sha.slice(0, 2), sha);
    await chmod(file, 0o644);
    await writeFile(file, Buffer.concat([data.subarray(0, 999), Buffer.from([data[999] ^ 1])]));
    const e = await failure(store.readChunk(sha));
    expect(e.code).toBe("DATA_LOSS");
    expect(e.message).toContain(`chunk ${sha}`);
    expect((await failure(store.readChunk("0".repeat(64)))).code).toBe("NOT_FOUND");
  });

  test("gc removes unreferenced chunks past the grace period and keeps referenced ones", async () => {
    const { path } = await goodArchive();
    const store = new ImageStore(root, { chunkSize: 16 * 1024 });
    const entry = await store.ingest(path);
    const orphan = randomBytes(100);
    await store.putChunk(sha256(orphan), orphan);
    expect((await store.gc()).chunksRemoved).toBe(0); // within the default grace period
    const result = await store.gc({ graceMs: 0 });
    expect(result).toMatchObject({ chunksRemoved: 1, bytesFreed: 100 });
    expect(await store.listChunks()).toEqual(new Set(entry.chunks.map((c) => c.sha256)));
  });

  test("gc keeps chunks named in keep whatever their age, and removes those in drop within the grace", async () => {
    const { path } = await goodArchive();
    const store = new ImageStore(root, { chunkSize: 16 * 1024 });
    const entry = await store.ingest(path);
    const [live, cancelled, young] = [randomBytes(100), randomBytes(200), randomBytes(300)];
    for (const c of [live, cancelled, young]) await store.putChunk(sha256(c), c);
    const referenced = entry.chunks[0].sha256;
    const result = await store.gc({
      keep: new Set([sha256(live)]),
      drop: new Set([sha256(cancelled), referenced]),
    });
    // A referenced chunk is never removed, even when named in drop; the young one waits for its grace.
    expect(result).toMatchObject({ chunksRemoved: 1, bytesFreed: 200, chunksYoung: 1 });
    const left = await store.listChunks();
    expect([
      left.has(sha256(live)),
      left.has(sha256(cancelled)),
      left.has(sha256(young)),
      left.has(referenced),
    ]).toEqual([true, false, true, true]);
    expect(await store.gc({ graceMs: 0, keep: new Set([sha256(live)]) })).toMatchObject({ chunksRemoved: 1 });
    expect((await store.listChunks()).has(sha256(live))).toBe(true);
  });
});

describe("ImageStore.commitImage", () => {
  /** A source store holding the good image, and a fresh destination store. */
  async function transferSetup(): Promise<{ source: ImageStore; dest: ImageStore; entry: ImageEntry }> {
    const { path } = await goodArchive();
    const source = new ImageStore(join(box, "store", "a"), { chunkSize: 16 * 1024 });
    const entry = await source.ingest(path);
    return { source, dest: new ImageStore(join(box, "store", "b")), entry };
  }

  async function copyChunks(source: ImageStore, dest: ImageStore, entry: ImageEntry): Promise<void> {
    for (const c of entry.chunks) await dest.putChunk(c.sha256, await source.readChunk(c.sha256));
  }

  const recordsOf = (store: ImageStore): Promise<string[]> => readdir(join(store.root, "images"));

  test("records an image whose chunks were put one by one", async () => {
    const { source, dest, entry } = await transferSetup();
    await copyChunks(source, dest, entry);
    expect(await dest.commitImage(entry.digest, entry.chunks, { name: "tiny-linux" })).toEqual(entry);
    expect(await dest.get(entry.digest)).toEqual(entry);
  });

  test("rejects a wrong digest with DATA_LOSS and records nothing", async () => {
    const { source, dest, entry } = await transferSetup();
    await copyChunks(source, dest, entry);
    const wrong = `sha256:${"a".repeat(64)}`;
    const e = await failure(dest.commitImage(wrong, entry.chunks));
    expect(e.code).toBe("DATA_LOSS");
    expect(e.message).toContain(`expected ${wrong}, but the bytes received hash to ${entry.digest}`);
    expect(await recordsOf(dest)).toEqual([]);
    expect(await dest.has(wrong)).toBe(false);
  });

  test("rejects chunks in the wrong order and records nothing", async () => {
    const { source, dest, entry } = await transferSetup();
    await copyChunks(source, dest, entry);
    const swapped = [entry.chunks[1], entry.chunks[0], ...entry.chunks.slice(2)];
    // The archive check sees a broken tar before the digest check at the end can.
    const e = await failure(dest.commitImage(entry.digest, swapped));
    expect(e.code).toBe("INVALID_ARGUMENT");
    expect(e.message).toContain("archive is not a valid tar file");
    expect(await recordsOf(dest)).toEqual([]);
  });

  test("rejects a chunk list whose sizes do not match the chunks with DATA_LOSS", async () => {
    const { source, dest, entry } = await transferSetup();
    await copyChunks(source, dest, entry);
    const lying = entry.chunks.map((c, i) => (i === 0 ? { ...c, size: c.size + 1 } : c));
    const e = await failure(dest.commitImage(entry.digest, lying));
    expect(e.code).toBe("DATA_LOSS");
    expect(e.message).toContain(`chunk #0 (${entry.chunks[0].sha256}) is ${entry.chunks[0].size} bytes`);
    expect(await recordsOf(dest)).toEqual([]);
  });

  test("rejects a missing chunk with FAILED_PRECONDITION naming it", async () => {
    const { source, dest, entry } = await transferSetup();
    await copyChunks(source, dest, { ...entry, chunks: entry.chunks.slice(1) });
    const e = await failure(dest.commitImage(entry.digest, entry.chunks));
    expect(e.code).toBe("FAILED_PRECONDITION");
    expect(e.message).toContain(`chunk #0 (${entry.chunks[0].sha256})`);
    expect(await recordsOf(dest)).toEqual([]);
  });

  test("re-validates the archive: a bad archive with a correct digest is refused", async () => {
    const bytes = await readFile(join(CORPUS_DIR, "abs-path.tar"));
    const store = new ImageStore(root);
    const chunks = [bytes.subarray(0, 4096), bytes.subarray(4096)].map((data) => ({
      sha256: sha256(data),
      size: data.length,
      data,
    }));
    for (const c of chunks) await store.putChunk(c.sha256, c.data);
    const digest = `sha256:${sha256(bytes)}`;
    const e = await failure(
      store.commitImage(
        digest,
        chunks.map(({ sha256, size }) => ({ sha256, size })),
      ),
    );
    expect(e.code).toBe("INVALID_ARGUMENT");
    expect(e.message).toContain(CORPUS["abs-path.tar"]);
    expect(await records()).toEqual([]);
  });

  test("rejects malformed input, naming the value", async () => {
    const store = new ImageStore(root);
    expect((await failure(store.commitImage("sha256:nope", []))).message).toContain('"sha256:nope"');
    const digest = `sha256:${"b".repeat(64)}`;
    expect((await failure(store.commitImage(digest, [{ sha256: "zz", size: 1 }]))).message).toContain('"zz"');
    expect((await failure(store.commitImage(digest, []))).message).toContain("chunk list");
  });
});
