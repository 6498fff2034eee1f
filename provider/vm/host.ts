/**
 * What both drivers need from the host: free ports, the process table (/proc), signals to a
 * process group, and the readiness check (ready marker in a log, then every port answering).
 * @internal
 */

import { spawn } from "child_process";
import * as fs from "fs";
import * as http from "http";
import * as net from "net";
import * as path from "path";
import { GciError, invalid, precondition } from "../errors";
import type { InstanceHandle, InstanceSpec } from "./types";

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

/** State letter and start time (clock ticks since boot) of a process, from /proc/<pid>/stat. */
export function procStat(pid: number): { state: string; startTime: string } | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces and parentheses: fields resume after the last ")".
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
  return { state: fields[0], startTime: fields[19] };
}

/** True while `pid` is the process that started at `startTime` and has not exited (zombies have). */
export function isSameProcess(pid: number, startTime: string): boolean {
  const stat = procStat(pid);
  return stat !== undefined && stat.startTime === startTime && stat.state !== "Z" && stat.state !== "X";
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

/** The last `count` lines of a log file (reads at most its last 16 KiB). */
export function tailLines(file: string, count: number): string[] {
  let fd: number;
  try {
    fd = fs.openSync(file, "r");
  } catch {
    return [];
  }
  try {
    const size = fs.fstatSync(fd).size;
    const length = Math.min(size, 16 * 1024);
    const buffer = Buffer.alloc(length);
    fs.readSync(fd, buffer, 0, length, size - length);
    return buffer
      .toString("utf8")
      .split(/\r?\n/)
      .map((line) => line.replace(/\r/g, "").trimEnd())
      .filter((line) => line.length > 0)
      .slice(-count);
  } finally {
    fs.closeSync(fd);
  }
}

/** Reads a growing log file from where the last read stopped, and finds the ready marker in it. */
class MarkerWatch {
  private offset = 0;
  private partial = "";

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
      const buffer = Buffer.alloc(64 * 1024);
      for (;;) {
        const n = fs.readSync(fd, buffer, 0, buffer.length, this.offset);
        if (n === 0) return false;
        this.offset += n;
        const lines = (this.partial + buffer.toString("latin1", 0, n)).split("\n");
        this.partial = lines.pop() ?? "";
        if (lines.some((line) => line.replace(/\r/g, "").trim() === READY_MARKER)) return true;
      }
    } finally {
      fs.closeSync(fd);
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

/** Starts `command` in its own process group with stdout and stderr to `logFd`; resolves with its pid. */
export function spawnDetached(
  command: string,
  args: readonly string[],
  cwd: string,
  logFd: number,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env, detached: true, stdio: ["ignore", logFd, logFd] });
    child.once("error", (e) =>
      reject(precondition(`cannot run ${command}: ${e.message}; check that it is installed and executable`)),
    );
    child.once("spawn", () => {
      child.unref();
      resolve(child.pid!);
    });
  });
}
