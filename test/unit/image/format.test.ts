import { execFileSync } from "child_process";
import { createHash } from "crypto";
import { createReadStream } from "fs";
import {
  chmod,
  lstat,
  mkdir,
  readFile,
  readdir,
  readlink,
  stat,
  symlink,
  utimes,
  writeFile,
} from "fs/promises";
import { join } from "path";
import { Writable } from "stream";
import * as tar from "tar-stream";
import * as format from "../../../provider/image/format";
import {
  type ArchiveEntry,
  type Manifest,
  checkManifest,
  extractImage,
  packDirectory,
  readImage,
  validateArchive,
} from "../../../provider/image";
import {
  CORPUS,
  CORPUS_DIR,
  ESCAPES,
  LARGE_CORPUS_FILES,
  OVER_UPLOAD_MAX,
  QEMU_MANIFEST,
  failure,
  listTree,
  makeImageDir,
  removeSandbox,
  sandbox,
} from "./helpers";

let box: string;
beforeEach(async () => {
  box = await sandbox();
});
afterEach(async () => {
  await removeSandbox(box);
});

const sha256 = async (path: string): Promise<string> =>
  `sha256:${createHash("sha256")
    .update(await readFile(path))
    .digest("hex")}`;

describe("packDirectory", () => {
  test("is reproducible: same input, byte-identical archive and digest", async () => {
    const dir = await makeImageDir(join(box, "img"));
    const a = await packDirectory(dir, QEMU_MANIFEST, join(box, "a.tar"));
    const b = await packDirectory(dir, QEMU_MANIFEST, join(box, "b.tar"));
    expect(b).toEqual(a);
    expect(await readFile(join(box, "b.tar"))).toEqual(await readFile(join(box, "a.tar")));
    expect(a.digest).toBe(await sha256(join(box, "a.tar")));
    expect(a.sizeBytes).toBe((await stat(join(box, "a.tar"))).size);
  });

  test("ignores mtimes, manifest key order and mode bits other than exec", async () => {
    const dir = await makeImageDir(join(box, "img"));
    const before = await packDirectory(dir, QEMU_MANIFEST, join(box, "a.tar"));
    for (const path of await listTree(dir)) {
      if (!(await lstat(join(dir, path))).isSymbolicLink()) await utimes(join(dir, path), 1e9, 1e9);
    }
    await chmod(join(dir, "boot", "initrd.img"), 0o600);
    await chmod(join(dir, "bin", "app"), 0o711);
    const reordered = Object.fromEntries(
      Object.entries({ ...QEMU_MANIFEST, env: { A: "1", B: "2" } }).reverse(),
    );
    const after = await packDirectory(dir, reordered as unknown as Manifest, join(box, "b.tar"));
    expect(after.digest).toBe(before.digest);
  });

  test("gives a different digest for different content or exec bits", async () => {
    const dir = await makeImageDir(join(box, "img"));
    const base = await packDirectory(dir, QEMU_MANIFEST, join(box, "a.tar"));
    await writeFile(join(dir, "boot", "initrd.img"), "initramfs!\n");
    const content = await packDirectory(dir, QEMU_MANIFEST, join(box, "b.tar"));
    await chmod(join(dir, "boot", "initrd.img"), 0o755);
    const mode = await packDirectory(dir, QEMU_MANIFEST, join(box, "c.tar"));
    expect(new Set([base.digest, content.digest, mode.digest]).size).toBe(3);
  });

  test("writes the manifest first, then sorted entries with fixed mtime, owner and modes", async () => {
    const dir = await makeImageDir(join(box, "img"));
    await packDirectory(dir, QEMU_MANIFEST, join(box, "a.tar"));
    const headers: tar.Header[] = [];
    for await (const entry of createReadStream(join(box, "a.tar")).pipe(tar.extract())) {
      headers.push(entry.header);
      entry.resume();
    }
    expect(headers.map((h) => h.name)).toEqual([
      "manifest.json",
      "bin",
      "bin/app",
      "boot",
      "boot/initrd.img",
      "boot/kernel",
      "boot/vmlinuz",
      "var",
      "var/empty",
    ]);
    for (const h of headers) {
      expect(h.mtime.getTime()).toBe(0);
      expect([h.uid, h.gid, h.uname, h.gname]).toEqual([0, 0, "", ""]);
    }
    const modes = Object.fromEntries(headers.map((h) => [h.name, h.mode]));
    expect(modes).toMatchObject({
      bin: 0o755,
      "bin/app": 0o755,
      "boot/initrd.img": 0o644,
      "boot/kernel": 0o777,
    });
    expect(headers.find((h) => h.name === "boot/kernel")).toMatchObject({
      type: "symlink",
      linkname: "vmlinuz",
    });
  });

  test("writes to a stream as well as to a path", async () => {
    const dir = await makeImageDir(join(box, "img"));
    const chunks: Buffer[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        chunks.push(chunk);
        cb();
      },
    });
    const streamed = await packDirectory(dir, QEMU_MANIFEST, sink);
    const filed = await packDirectory(dir, QEMU_MANIFEST, join(box, "a.tar"));
    expect(streamed).toEqual(filed);
    expect(Buffer.concat(chunks)).toEqual(await readFile(join(box, "a.tar")));
  });

  test.each([
    ["an absolute symlink", "/etc/passwd", 'symlink "evil" -> "/etc/passwd" has an absolute target'],
    ["a symlink leaving the directory", "../../x", 'symlink "evil" -> "../../x" leaves the image root'],
  ])("refuses %s, and writes no archive", async (_what, target, message) => {
    const dir = await makeImageDir(join(box, "img"));
    await symlink(target, join(dir, "evil"));
    const e = await failure(packDirectory(dir, QEMU_MANIFEST, join(box, "a.tar")));
    expect(e.code).toBe("INVALID_ARGUMENT");
    expect(e.message).toContain(message);
    expect(e.message).toContain("before packing");
    await expect(stat(join(box, "a.tar"))).rejects.toThrow();
  });

  test("refuses a FIFO in the directory", async () => {
    const dir = await makeImageDir(join(box, "img"));
    execFileSync("mkfifo", [join(dir, "pipe")]);
    const e = await failure(packDirectory(dir, QEMU_MANIFEST, join(box, "a.tar")));
    expect(e.message).toContain(`${JSON.stringify(join(dir, "pipe"))} is a device node, FIFO or socket`);
  });

  test("refuses a manifest naming a missing kernel, and an invalid manifest with every problem", async () => {
    const dir = await makeImageDir(join(box, "img"));
    const missing = await failure(
      packDirectory(dir, { ...QEMU_MANIFEST, kernel: "boot/bzImage" }, join(box, "a.tar")),
    );
    expect(missing.message).toContain('field "kernel" names "boot/bzImage", which is not in the archive');
    const bad = {
      schema: "gci.image/v1",
      name: "Bad Name",
      driver: "qemu",
      ports: [0],
    } as unknown as Manifest;
    const e = await failure(packDirectory(dir, bad, join(box, "a.tar")));
    expect(e.code).toBe("INVALID_ARGUMENT");
    for (const part of ["name:", "ports[0]:", "kernel: is required", "initrd: is required"]) {
      expect(e.message).toContain(part);
    }
  });
});

describe("checkManifest", () => {
  it("refuses variables the loader, libc or a shell acts on, naming each", () => {
    const problems = checkManifest({
      ...QEMU_MANIFEST,
      env: {
        LD_PRELOAD: "/x.so",
        LD_LIBRARY_PATH: "/l",
        GLIBC_TUNABLES: "a",
        BASH_ENV: "/e",
        GCI_ID: "me",
        OK: "1",
      },
    });
    expect(problems.map((p) => p.property).sort()).toEqual(
      ["env.BASH_ENV", "env.GCI_ID", "env.GLIBC_TUNABLES", "env.LD_LIBRARY_PATH", "env.LD_PRELOAD"].sort(),
    );
    expect(problems.find((p) => p.property === "env.LD_PRELOAD")?.reason).toMatch(/LD_PRELOAD .*remove it/);
  });

  test("accepts a process image and reports every problem of a bad one", () => {
    expect(
      checkManifest({
        schema: "gci.image/v1",
        name: "web.v2",
        driver: "process",
        entrypoint: ["bin/web", "--port=80"],
      }),
    ).toEqual([]);
    const problems = checkManifest({
      schema: "gci.image/v2",
      name: "",
      driver: "process",
      entrypoint: ["/bin/web"],
      env: { "1X": "a", Y: 3 },
      ports: [80, 80, 70000],
      extra: true,
    });
    expect(problems.map((p) => p.property).sort()).toEqual(
      ["schema", "name", "entrypoint[0]", "env.1X", "env.Y", "ports[1]", "ports[2]", "extra"].sort(),
    );
  });
});

describe("readImage", () => {
  test("reads a good archive from a path or a stream, with the packer's digest", async () => {
    const dir = await makeImageDir(join(box, "img"));
    const packed = await packDirectory(dir, QEMU_MANIFEST, join(box, "a.tar"));
    const fromPath = await readImage(join(box, "a.tar"));
    const fromStream = await validateArchive(createReadStream(join(box, "a.tar"), { highWaterMark: 777 }));
    expect(fromPath).toEqual(fromStream);
    expect(fromPath).toMatchObject({ digest: packed.digest, sizeBytes: packed.sizeBytes, entries: 9 });
    expect(fromPath.manifest).toEqual({ ...QEMU_MANIFEST, env: { A: "1", B: "2" } });
  });

  test("hands each entry to onEntry in canonical form", async () => {
    const dir = await makeImageDir(join(box, "img"));
    await packDirectory(dir, QEMU_MANIFEST, join(box, "a.tar"));
    const seen: ArchiveEntry[] = [];
    await readImage(join(box, "a.tar"), {
      onEntry: async (entry, data) => {
        seen.push(entry);
        for await (const part of data) void part;
      },
    });
    expect(seen.find((e) => e.path === "boot/kernel")).toEqual({
      path: "boot/kernel",
      type: "symlink",
      size: 0,
      mode: 0o777,
      linkTarget: "vmlinuz",
    });
    expect(seen.find((e) => e.path === "bin/app")).toMatchObject({ type: "file", mode: 0o755 });
  });

  test("refuses with DATA_LOSS naming both digests when the expected digest differs", async () => {
    const dir = await makeImageDir(join(box, "img"));
    const packed = await packDirectory(dir, QEMU_MANIFEST, join(box, "a.tar"));
    const wrong = `sha256:${"0".repeat(64)}`;
    const e = await failure(validateArchive(join(box, "a.tar"), { expectedDigest: wrong }));
    expect(e.code).toBe("DATA_LOSS");
    expect(e.message).toContain(`expected ${wrong}, but the bytes received hash to ${packed.digest}`);
  });

  test("refuses a malformed expected digest, naming it", async () => {
    const e = await failure(validateArchive(join(box, "none.tar"), { expectedDigest: "md5:abc" }));
    expect(e.code).toBe("INVALID_ARGUMENT");
    expect(e.message).toContain('expected digest "md5:abc" is not valid');
  });

  test("reports a missing archive file as NOT_FOUND", async () => {
    const e = await failure(validateArchive(join(box, "none.tar")));
    expect(e.code).toBe("NOT_FOUND");
  });
});

describe("bad archive corpus", () => {
  test("has an expected message for every file, each file under 100 KiB but the limit ones", async () => {
    const files = (await readdir(CORPUS_DIR)).filter((f) => f.endsWith(".tar")).sort();
    expect(files).toEqual([...Object.keys(CORPUS), OVER_UPLOAD_MAX.file].sort());
    for (const f of files) {
      const limit = LARGE_CORPUS_FILES.includes(f) ? 4 * 1024 * 1024 : 100 * 1024;
      expect((await stat(join(CORPUS_DIR, f))).size).toBeLessThan(limit);
    }
  });

  test.each(Object.entries(CORPUS))("validateArchive refuses %s", async (file, message) => {
    const e = await failure(validateArchive(join(CORPUS_DIR, file)));
    expect(e.code).toBe("INVALID_ARGUMENT");
    expect(e.message).toContain(message);
  });

  test.each(Object.entries(CORPUS))("readImage refuses %s from a stream too", async (file, message) => {
    const e = await failure(readImage(createReadStream(join(CORPUS_DIR, file), { highWaterMark: 100 })));
    expect(e.message).toContain(message);
  });
});

describe("extractImage", () => {
  test("extracts a good image with normalized modes and its symlink", async () => {
    const dir = await makeImageDir(join(box, "img"));
    const packed = await packDirectory(dir, QEMU_MANIFEST, join(box, "a.tar"));
    const dest = join(box, "out");
    const info = await extractImage(join(box, "a.tar"), dest);
    expect(info.digest).toBe(packed.digest);
    expect(await listTree(dest)).toEqual([...(await listTree(dir)), "manifest.json"].sort());
    expect(await readFile(join(dest, "boot", "vmlinuz"))).toEqual(
      await readFile(join(dir, "boot", "vmlinuz")),
    );
    expect(await readlink(join(dest, "boot", "kernel"))).toBe("vmlinuz");
    expect((await stat(join(dest, "bin", "app"))).mode & 0o777).toBe(0o755);
    expect((await stat(join(dest, "boot", "initrd.img"))).mode & 0o777).toBe(0o644);
  });

  test("refuses a destination that is not empty", async () => {
    const dir = await makeImageDir(join(box, "img"));
    await packDirectory(dir, QEMU_MANIFEST, join(box, "a.tar"));
    await mkdir(join(box, "out"));
    await symlink("/tmp", join(box, "out", "boot"));
    const e = await failure(extractImage(join(box, "a.tar"), join(box, "out")));
    expect(e.code).toBe("FAILED_PRECONDITION");
    expect(await listTree(join(box, "out"))).toEqual(["boot"]);
  });

  test.each(ESCAPES)("refuses %s before touching the disk", async (file) => {
    const e = await failure(extractImage(join(CORPUS_DIR, file), join(box, "sub", "out")));
    expect(e.message).toContain(CORPUS[file]);
    expect(await listTree(box)).toEqual([]);
  });

  // The archive could change between the checking pass and the writing pass; the writing pass
  // alone must still refuse, and remove what it wrote before a whole-archive rule failed.
  test.each(ESCAPES)("refuses %s in the writing pass alone, leaving nothing behind", async (file) => {
    const archive = join(CORPUS_DIR, file);
    const skipFirstPass = jest.spyOn(format, "validateArchive").mockResolvedValue({
      digest: await sha256(archive),
      sizeBytes: 0,
      manifest: QEMU_MANIFEST,
      entries: 0,
    });
    try {
      const e = await failure(extractImage(archive, join(box, "sub", "out")));
      expect(e.message).toContain(CORPUS[file]);
      expect(await listTree(box)).toEqual(["sub", "sub/out"]);
    } finally {
      skipFirstPass.mockRestore();
    }
  });
});
