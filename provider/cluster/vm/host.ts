/**
 * What both drivers need from the host: free ports, the process table (/proc), signals to a
 * process group, and the readiness check (ready marker in a log, then every port answering).
 * @internal
 */

import { spawn, StdioOptions } from "child_process";
import * as fs from "fs";
import * as http from "http";
import * as net from "net";
import * as path from "path";
import type { Writable } from "stream";
import { dataLoss, GciError, invalid, precondition } from "../../common/errors";
import type { InstanceHandle, InstanceSpec } from "./types";

import { isSameProcess, procStat } from "../../common/proc";

export { isSameProcess, procStat };

/** The line an instance prints (console or stdout) once its service is up. */
export const READY_MARKER = "GCI-READY";

/** How often waits look at the log file and the process table. */
const POLL_MS = 100;

// Ports handed out recently; binding port 0 twice in a row may return the same port once the
// first socket is closed, so a batch of starts could otherwise collide.
const recentPorts = new Map<number, number>();
const RECENT_PORT_MS = 60_000;

/** A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it: bind to port 0). */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = net.createServer();
      server.unref();
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        const address = server.address() as net.AddressInfo;
        server.close(() => resolve(address.port));
      });
    });
    const now = Date.now();
    for (const [p, at] of recentPorts) if (now - at > RECENT_PORT_MS) recentPorts.delete(p);
    if (!recentPorts.has(port)) {
      recentPorts.set(port, now);
      return port;
    }
  }
  throw new GciError("RESOURCE_EXHAUSTED", "no free TCP port on 127.0.0.1 after 20 tries; free some ports");
}

/** Sends `signal` to the process group `pgid`; a group that is gone is not an error. */
export function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ESRCH") throw e;
  }
}

/** Sends `signal` to one process; one that is gone is not an error. */
export function signalProcess(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ESRCH") throw e;
  }
}

/** Waits until the instance's process is gone; false if it still runs after `timeoutMs`. */
export async function waitGone(handle: InstanceHandle, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isSameProcess(handle.pid, handle.startTime)) {
    if (Date.now() >= deadline) return false;
    await sleep(Math.min(20, POLL_MS));
  }
  return true;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The last `count` lines of a log file and the one rotated before it (reads at most 16 KiB). */
export function tailLines(file: string, count: number): string[] {
  return readLogTail(file, 16 * 1024)
    .split(/\r?\n/)
    .map((line) => line.replace(/\r/g, "").trimEnd())
    .filter((line) => line.length > 0)
    .slice(-count);
}

/**
 * The newest `bytes` of an instance's log: the end of the previous file (`<file>.1`, see
 * startLogCapper) followed by the current one, so a rotation just made does not empty the tail.
 */
export function readLogTail(file: string, bytes: number): string {
  const current = readFileTail(file, bytes);
  const previous =
    current.length < bytes
      ? readFileTail(`${file}${PREVIOUS_LOG_SUFFIX}`, bytes - current.length)
      : undefined;
  return Buffer.concat([previous ?? Buffer.alloc(0), current]).toString("utf8");
}

/** The last `bytes` of a file; empty when it does not exist; DATA_LOSS when it is a symlink. */
function readFileTail(file: string, bytes: number): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return Buffer.alloc(0);
    if (code === "ELOOP") {
      throw dataLoss(`${file} is a symbolic link, not the log GCI wrote: remove it and restart the instance`);
    }
    throw e;
  }
  try {
    const size = fs.fstatSync(fd).size;
    const length = Math.min(size, bytes);
    const buffer = Buffer.alloc(length);
    const n = fs.readSync(fd, buffer, 0, length, size - length);
    return buffer.subarray(0, n);
  } finally {
    fs.closeSync(fd);
  }
}

/** Where a log's previous file goes when the current one reaches LOG_CAP_BYTES. */
export const PREVIOUS_LOG_SUFFIX = ".1";
/** The most an instance's log file holds; one previous file is kept, so a log takes at most twice this. */
export const LOG_CAP_BYTES = 1024 * 1024;

/**
 * Copies its input to `logFile`, and when the file reaches LOG_CAP_BYTES keeps it as
 * `<logFile>.1` (replacing the one before) and goes on in a new, empty file: a log never takes
 * more than twice the cap. GNU head reads no more than it writes, so no byte is lost at a
 * rotation (stdbuf makes it write each read at once, not when its buffer fills); the current
 * file is replaced by a rename, so it never is missing. Ends at the end
 * of its input, i.e. once every process that writes to it has ended.
 */
const LOG_CAPPER = `
log=$1 cap=$2
while :; do
  stdbuf -o0 head -c "$cap" >>"$log" || exit 1
  [ "$(stat -c %s "$log")" -ge "$cap" ] || exit 0
  ln -f "$log" "$log${PREVIOUS_LOG_SUFFIX}" && : >"$log.next" && mv -f "$log.next" "$log" || exit 1
done
`;

/** A process that serves an instance from outside it (log capper, port forwarder). */
export interface HelperProcess {
  readonly pid: number;
  readonly startTime: string;
}

/**
 * Starts the log capper of `logFile` (emptied first), detached, so it outlives a cluster
 * manager that restarts. Give `input` to the instance's processes as stdout and stderr, then
 * destroy it: the capper ends when the last of them has.
 */
export async function startLogCapper(logFile: string): Promise<HelperProcess & { input: Writable }> {
  fs.writeFileSync(logFile, "");
  for (const stale of [`${logFile}${PREVIOUS_LOG_SUFFIX}`, `${logFile}.next`])
    fs.rmSync(stale, { force: true });
  const child = spawn("sh", ["-c", LOG_CAPPER, "gci-log", logFile, String(LOG_CAP_BYTES)], {
    cwd: path.dirname(logFile),
    env: HOST_TOOL_ENV,
    detached: true,
    stdio: ["pipe", "ignore", "ignore"],
  });
  const pid = await new Promise<number>((resolve, reject) => {
    child.once("error", (e) =>
      reject(precondition(`cannot start the log writer of ${logFile}: ${e.message}`)),
    );
    child.once("spawn", () => resolve(child.pid!));
  });
  child.unref();
  const stat = procStat(pid);
  if (stat === undefined) throw precondition(`the log writer of ${logFile} ended at once`);
  return { pid, startTime: stat.startTime, input: child.stdin! };
}

/**
 * Waits (at most `timeoutMs`) for an instance's helpers to end by themselves — they do once
 * the instance has — then sends SIGKILL to those left.
 */
export async function endHelpers(helpers: readonly HelperProcess[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const left = () => helpers.filter((h) => isSameProcess(h.pid, h.startTime));
  while (left().length > 0 && Date.now() < deadline) await sleep(10);
  for (const helper of left()) signalProcess(helper.pid, "SIGKILL");
}

/**
 * The whole environment of the tools the drivers run as root on the host (sh, unshare, mount,
 * QEMU before -runas, ...): fixed here, never taken from an image or from the caller.
 */
export const HOST_TOOL_ENV: NodeJS.ProcessEnv = Object.freeze({
  PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  LC_ALL: "C",
});

/**
 * Reads a growing log file from where the last read stopped, and finds the ready marker in
 * it. When the file was rotated (another inode), the rest of the old one is read first.
 */
class MarkerWatch {
  private offset = 0;
  private partial = "";
  private inode: number | undefined;

  constructor(private readonly file: string) {}

  /** True once a whole line equal to the marker was written (carriage returns ignored). */
  seen(): boolean {
    let fd: number;
    try {
      fd = fs.openSync(this.file, "r");
    } catch {
      return false;
    }
    try {
      const { ino: inode, size } = fs.fstatSync(fd);
      // Another inode, or one shorter than what was read: a new file (a deleted log's inode
      // number can come back for the new one, so the number alone does not tell).
      if (this.inode !== undefined && (inode !== this.inode || size < this.offset)) {
        // The new file goes on where the previous one ended (a line may span both).
        if (this.readRotated()) return true;
        this.offset = 0;
      }
      this.inode = inode;
      return this.readFrom(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * The previous log: the rest of the file read before, or all of it when the log rotated more
   * than once since (what went before it is gone).
   */
  private readRotated(): boolean {
    let fd: number;
    try {
      fd = fs.openSync(`${this.file}${PREVIOUS_LOG_SUFFIX}`, "r");
    } catch {
      return false;
    }
    try {
      if (fs.fstatSync(fd).ino !== this.inode) {
        this.offset = 0;
        this.partial = "";
      }
      return this.readFrom(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  private readFrom(fd: number): boolean {
    const buffer = Buffer.alloc(64 * 1024);
    for (;;) {
      const n = fs.readSync(fd, buffer, 0, buffer.length, this.offset);
      if (n === 0) return false;
      this.offset += n;
      const lines = (this.partial + buffer.toString("latin1", 0, n)).split("\n");
      this.partial = lines.pop() ?? "";
      if (lines.some((line) => line.replace(/\r/g, "").trim() === READY_MARKER)) return true;
    }
  }
}

/** True when an HTTP GET of "/" at `address` ("host:port") gets any response. */
export function answersHttp(address: string, timeoutMs: number): Promise<boolean> {
  const colon = address.lastIndexOf(":");
  return new Promise((resolve) => {
    const request = http.get(
      {
        host: address.slice(0, colon),
        port: Number(address.slice(colon + 1)),
        path: "/",
        agent: false,
        timeout: timeoutMs,
      },
      (response) => {
        response.resume();
        response.on("end", () => resolve(true));
        response.on("error", () => resolve(true));
      },
    );
    request.on("timeout", () => request.destroy());
    request.on("error", () => resolve(false));
  });
}

/** What a driver tells waitForReady about its instance's kind, for messages. */
export interface ReadyContext {
  /** "VM" or "process instance". */
  readonly noun: string;
  /** Where the log comes from: "console" or "output". */
  readonly logName: string;
  /** More lines worth showing when it dies, e.g. QEMU's own stderr. @default none */
  readonly extraLog?: () => string[];
  /** What to do when it died before it was ready. @default fix the image */
  readonly fix?: string;
}

/**
 * Resolves once the ready marker is in the instance's log and every forwarded port answers an
 * HTTP GET; rejects (FAILED_PRECONDITION) as soon as its process is gone, or DEADLINE_EXCEEDED
 * after `timeoutMs` — both with the last lines of its log.
 */
export async function waitForReady(
  handle: InstanceHandle,
  timeoutMs: number,
  context: ReadyContext,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const watch = new MarkerWatch(handle.logFile);
  const pending = new Set(Object.values(handle.addresses));
  let marked = false;
  const last = (): string => {
    const lines = [...tailLines(handle.logFile, 12), ...(context.extraLog?.() ?? [])];
    return lines.length > 0 ? lines.map((l) => `  | ${l}`).join("\n") : "  (nothing)";
  };
  for (;;) {
    if (!marked) marked = watch.seen();
    if (marked) {
      for (const address of [...pending]) {
        const left = deadline - Date.now();
        if (left > 0 && (await answersHttp(address, Math.min(2000, left)))) pending.delete(address);
      }
      if (pending.size === 0) return;
    }
    if (!isSameProcess(handle.pid, handle.startTime)) {
      throw precondition(
        `${context.noun} "${handle.id}" exited before it was ready (no "${READY_MARKER}" line` +
          `${marked ? ", or its ports did not answer" : ""}). Last lines of its ${context.logName} ` +
          `(${handle.logFile}):\n${last()}\n${context.fix ?? `Fix the image so it prints "${READY_MARKER}" once it serves.`}`,
      );
    }
    if (Date.now() >= deadline) {
      const waitingFor = marked
        ? `ports ${[...pending].join(", ")} to answer HTTP`
        : `"${READY_MARKER}" on its ${context.logName}`;
      throw new GciError(
        "DEADLINE_EXCEEDED",
        `${context.noun} "${handle.id}" was not ready within ${Math.round(timeoutMs / 1000)} s: still ` +
          `waiting for ${waitingFor}. Last lines of its ${context.logName} (${handle.logFile}):\n${last()}\n` +
          `It keeps running; stop it, or wait longer if the host is busy.`,
      );
    }
    await sleep(POLL_MS);
  }
}

// Identity values reach a kernel command line or an environment: keep them to one safe token.
const TOKEN = /^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,254}$/;

/** Throws INVALID_ARGUMENT unless identity values are single safe tokens and sizes and paths make sense. */
export function checkSpec(spec: InstanceSpec): void {
  for (const [what, value] of [
    ["instance id", spec.id],
    ["datacenter", spec.datacenter],
    ["digest", spec.digest],
  ] as const) {
    if (!TOKEN.test(value)) {
      throw invalid(
        `${what} "${value}" cannot be handed to an instance: use 1-255 characters of letters, digits ` +
          `and . _ : @ + -, starting with a letter or digit`,
      );
    }
  }
  if (!Number.isInteger(spec.vcpus) || spec.vcpus < 1) {
    throw invalid(
      `vcpus ${spec.vcpus} is not a positive whole number; ask for a machine size such as "micro"`,
    );
  }
  if (!Number.isInteger(spec.memoryMiB) || spec.memoryMiB < 16) {
    throw invalid(
      `memoryMiB ${spec.memoryMiB} is too small; give at least 16 (a machine size such as "micro")`,
    );
  }
  if (!path.isAbsolute(spec.runDir) || !path.isAbsolute(spec.imageDir)) {
    throw invalid(
      `runDir "${spec.runDir}" and imageDir "${spec.imageDir}" must be absolute paths; resolve them first`,
    );
  }
}

/** The first executable called `name` on PATH, or undefined. */
export function findOnPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin").split(":")) {
    if (dir === "") continue;
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // Not here.
    }
  }
  return undefined;
}

/** Where a spawned process writes: one file descriptor or stream for both outputs, or one each. */
export type Output =
  number | Writable | { readonly stdout: number | Writable; readonly stderr: number | Writable };

/**
 * Starts `command` in its own process group with stdout and stderr to `output` (and `extraFds`
 * of this process as its fds 3, 4, ...); resolves with its pid. Its environment is HOST_TOOL_ENV
 * unless `env` is given.
 */
export function spawnDetached(
  command: string,
  args: readonly string[],
  cwd: string,
  output: Output,
  env: NodeJS.ProcessEnv = HOST_TOOL_ENV,
  extraFds: readonly number[] = [],
): Promise<number> {
  const [stdout, stderr] =
    typeof output === "object" && "stdout" in output ? [output.stdout, output.stderr] : [output, output];
  return new Promise((resolve, reject) => {
    const stdio: StdioOptions = ["ignore", stdout, stderr, ...extraFds];
    const child = spawn(command, args, { cwd, env, detached: true, stdio });
    child.once("error", (e) =>
      reject(precondition(`cannot run ${command}: ${e.message}; check that it is installed and executable`)),
    );
    child.once("spawn", () => {
      child.unref();
      resolve(child.pid!);
    });
  });
}
