/**
 * Issue 10, item 7.5: an extracted image is durable before it is marked complete (every file
 * and the marker fsync'd, seen with strace on the real daemon), and what no placement or
 * instance uses — extracted images, unreferenced chunks, bytes without a placement — is
 * collected by the cluster manager, after a delete and when it starts.
 */

import { ChildProcess, spawn } from "child_process";
import { createHash, randomBytes, randomUUID } from "crypto";
import * as fs from "fs";
import * as path from "path";
import { waitForOperation } from "../../provider/common/client";
import { isAlive } from "../../provider/world";
import { makeImage, testWorld, TestWorld, until } from "../support/world";
import { push, startGroup } from "./crash-support";

const rootfs = (world: TestWorld, dc: string, hex: string): string =>
  path.join(world.dc(dc).dataDir, "rootfs", hex);

/** strace of every thread of `pid` (and threads it starts): fsyncs and renames, with paths. */
function traceFsyncs(pid: number, out: string): ChildProcess {
  const tasks = fs.readdirSync(`/proc/${pid}/task`).flatMap((t) => ["-p", t]);
  return spawn(
    "strace",
    ["-f", "-qq", "-y", "-e", "trace=fsync,fdatasync,rename,renameat,renameat2", "-o", out, ...tasks],
    { stdio: "ignore" },
  );
}

/** Whether every thread of `pid` has a tracer. */
function traced(pid: number): boolean {
  return fs.readdirSync(`/proc/${pid}/task`).every((t) => {
    const status = fs.readFileSync(`/proc/${pid}/task/${t}/status`, "utf8");
    return !/^TracerPid:\s+0$/m.test(status);
  });
}

describe("collect: extracted images and chunks nobody uses", () => {
  let world: TestWorld;

  beforeAll(async () => {
    world = await testWorld({ regions: { r: ["r-1"] } });
  }, 60_000);

  afterAll(async () => {
    await world?.stop();
  });

  it("extracts durably: every extracted file is fsync'd before the .complete marker is in place", async () => {
    const image = await makeImage(world.dir, { name: "durable-extract", sizeMiB: 1 });
    const digest = await push(world, "r-1", image.file);
    const out = path.join(world.dir, "strace.txt");
    const strace = traceFsyncs(world.dc("r-1").pid, out);
    await until(() => traced(world.dc("r-1").pid), 10_000, "strace to attach to every thread");
    const start = randomUUID();
    try {
      await startGroup(world, "r-1", digest, 1, start);
    } finally {
      strace.kill("SIGINT");
      await until(() => strace.exitCode !== null || strace.signalCode !== null, 10_000, "strace to end");
    }
    const dir = rootfs(world, "r-1", digest.slice(7));
    const lines = fs.readFileSync(out, "utf8").split("\n");
    const synced = new Set(
      lines.flatMap((l) => [...l.matchAll(/f(?:data)?sync\(\d+<([^>]+)>\)\s+=\s+0/g)].map((m) => m[1])),
    );
    const busybox = path.join(dir, "bin", "busybox");
    const markerAt = lines.findIndex((l) => /rename/.test(l) && l.includes(`${dir}/.complete"`));
    const lastFileSync = lines.reduce(
      (at, l, i) => (l.includes(`<${dir}/`) && /sync\(/.test(l) ? i : at),
      -1,
    );
    expect({
      busybox: synced.has(busybox),
      padding: synced.has(path.join(dir, "padding.bin")),
      directory: synced.has(dir),
      markerRenamedAfterSyncs: markerAt > lastFileSync && lastFileSync >= 0,
    }).toEqual({ busybox: true, padding: true, directory: true, markerRenamedAfterSyncs: true });
    const client = world.client("r-1");
    await waitForOperation(client, await client.stopVms(randomUUID(), start), { timeoutMs: 60_000 });
  }, 120_000);

  it("after DeleteImage, the extracted image is removed and the collection is logged", async () => {
    const image = await makeImage(world.dir, { name: "collect-after-delete", sizeMiB: 1 });
    const digest = await push(world, "r-1", image.file);
    const start = randomUUID();
    await startGroup(world, "r-1", digest, 1, start);
    const client = world.client("r-1");
    await waitForOperation(client, await client.stopVms(randomUUID(), start), { timeoutMs: 60_000 });
    expect(fs.existsSync(rootfs(world, "r-1", digest.slice(7)))).toBe(true);
    await client.deleteImage(randomUUID(), digest);
    expect({
      extracted: fs.existsSync(rootfs(world, "r-1", digest.slice(7))),
      logged: world.logs("r-1").some((l) => l.event === "collect.freed" && Number(l.extracted) >= 1),
    }).toEqual({ extracted: false, logged: true });
  }, 120_000);

  it("at start, an orphan extracted image and an old unreferenced chunk are collected", async () => {
    const data = world.dc("r-1").dataDir;
    const orphan = rootfs(world, "r-1", createHash("sha256").update(randomUUID()).digest("hex"));
    fs.mkdirSync(path.join(orphan, "bin"), { recursive: true });
    fs.writeFileSync(path.join(orphan, "bin", "tool"), "left by a deleted image");
    fs.writeFileSync(path.join(orphan, ".complete"), "x");
    // A chunk a failed transfer left behind, two hours ago.
    const bytes = randomBytes(4096);
    const sha = createHash("sha256").update(bytes).digest("hex");
    const chunk = path.join(data, "images", "chunks", sha.slice(0, 2), sha);
    fs.mkdirSync(path.dirname(chunk), { recursive: true });
    fs.writeFileSync(chunk, bytes);
    const old = new Date(Date.now() - 2 * 3600_000);
    fs.utimesSync(chunk, old, old);

    world.kill("r-1");
    await until(() => !isAlive(world.dc("r-1").pid), 10_000, "the cluster manager to exit");
    await world.restart("r-1");
    expect({ orphan: fs.existsSync(orphan), chunk: fs.existsSync(chunk) }).toEqual({
      orphan: false,
      chunk: false,
    });
  }, 60_000);
});
