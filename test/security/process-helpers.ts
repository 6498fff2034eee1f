/**
 * Shared by the process-sandbox security tests: the process-web image extracted once per test
 * file, instances of it running a shell script instead of its server, and what they printed.
 */

import { execFileSync } from "child_process";
import { randomBytes } from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { extractImage, Manifest } from "../../provider/image";
import { InstanceHandle, InstanceSpec, ProcessDriver } from "../../provider/cluster/vm";
import { BuiltImage, processImage } from "../support/guest";

/** The process-web image, extracted into a folder of the test's own. */
export interface ProcessFixture {
  readonly tmp: string;
  readonly image: BuiltImage;
  readonly imageDir: string;
  readonly manifest: Manifest;
}

export async function processFixture(prefix: string): Promise<ProcessFixture> {
  const image = await processImage();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `gci-security-${prefix}-`));
  const imageDir = path.join(tmp, "image");
  const { manifest } = await extractImage(image.file, imageDir, { expectedDigest: image.digest });
  return { tmp, image, imageDir, manifest };
}

/** A copy of the fixture's image folder with `files` (path -> content) added, for one test. */
export function imageWith(fixture: ProcessFixture, name: string, files: Record<string, string>): string {
  const dir = path.join(fixture.tmp, name);
  execFileSync("cp", ["-a", fixture.imageDir, dir]);
  for (const [file, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    fs.writeFileSync(path.join(dir, file), content);
  }
  return dir;
}

/** An instance of the fixture's image; `script` (busybox sh) replaces the server when given. */
export function specFor(
  fixture: ProcessFixture,
  options: {
    script?: string;
    env?: Record<string, string>;
    imageDir?: string;
    ports?: number[];
    memoryMiB?: number;
  } = {},
): InstanceSpec {
  const id = `sec-${randomBytes(4).toString("hex")}`;
  const manifest: Manifest = {
    ...fixture.manifest,
    ...(options.script === undefined ? {} : { entrypoint: ["bin/sh", "-c", options.script], ports: [] }),
    ...(options.ports === undefined ? {} : { ports: options.ports }),
    ...(options.env === undefined ? {} : { env: options.env }),
  };
  return {
    id,
    datacenter: "sec-dc",
    digest: fixture.image.digest,
    imageDir: options.imageDir ?? fixture.imageDir,
    manifest,
    vcpus: 1,
    memoryMiB: options.memoryMiB ?? 64,
    runDir: path.join(fixture.tmp, "instances", id),
  };
}

/** Waits (at most `timeoutMs`) until the instance has ended by itself; false if it still runs. */
export async function endsWithin(
  driver: ProcessDriver,
  handle: InstanceHandle,
  timeoutMs: number,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (driver.isRunning(handle)) {
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

/** Everything the instance wrote to its output: the previous log file (if rotated), then the current one. */
export function outputOf(handle: InstanceHandle): string {
  const read = (file: string): string => {
    try {
      return fs.readFileSync(file, "utf8");
    } catch (e) {
      // Not written yet, or not rotated yet.
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return "";
      throw e;
    }
  };
  return read(`${handle.logFile}.1`) + read(handle.logFile);
}

/** Runs `script` as an instance to its end (bounded by `timeoutMs`) and returns its output. */
export async function runScript(
  driver: ProcessDriver,
  spec: InstanceSpec,
  timeoutMs = 20_000,
): Promise<{ handle: InstanceHandle; output: string }> {
  const handle = await driver.start(spec);
  try {
    if (!(await endsWithin(driver, handle, timeoutMs))) {
      throw new Error(`instance ${spec.id} still runs after ${timeoutMs} ms:\n${outputOf(handle)}`);
    }
  } finally {
    await driver.stop(handle);
  }
  return { handle, output: outputOf(handle) };
}

/** Processes (pids) of the instance: every process whose pid namespace is the entrypoint's. */
export function instanceProcesses(handle: InstanceHandle): number[] {
  const init = childOf(handle.pid);
  if (init === 0) return [];
  const ns = fs.readlinkSync(`/proc/${init}/ns/pid_for_children`);
  const pids: number[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (fs.readlinkSync(`/proc/${entry}/ns/pid`) === ns && Number(entry) !== init) pids.push(Number(entry));
    } catch {
      // Ended while we looked.
    }
  }
  return pids;
}

/** The first child of `pid` (0 when it has none). */
export function childOf(pid: number): number {
  if (!(pid > 0)) return 0;
  try {
    return Number(fs.readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(" ")[0]) || 0;
  } catch {
    return 0;
  }
}

/** The field `name` of /proc/<pid>/status. */
export function statusField(pid: number, name: string): string {
  const line = fs
    .readFileSync(`/proc/${pid}/status`, "utf8")
    .split("\n")
    .find((l) => l.startsWith(`${name}:`));
  return (line ?? "").slice(name.length + 1).trim();
}

/** The entrypoint of a running instance: the child of the pid namespace's init (bounded wait). */
export async function entrypointOf(handle: InstanceHandle): Promise<number> {
  for (const deadline = Date.now() + 5000; Date.now() < deadline;) {
    const entry = childOf(childOf(handle.pid));
    if (entry > 0) return entry;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`instance ${handle.id} has no entrypoint process after 5 s`);
}
