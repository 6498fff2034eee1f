/**
 * The process driver: each instance is a sandboxed, supervised process started from the
 * image's root directory — a "process instance", never a VM. It exists for scale (hundreds of
 * instances on one machine), where booting a kernel per instance would not fit.
 *
 * Sandbox, per instance: its own mount, pid, IPC and network namespaces (`unshare`); a root
 * that is an overlay of the image (read-only, shared by all instances, nosuid) and a tmpfs of
 * its own (so writes vanish with it and cost memory, capped at memoryMiB); a private /proc, a
 * /dev holding only null, zero, random and urandom; a uid and gid of its own (./uid) with no
 * supplementary groups and no capabilities. Its cgroups hold it to vcpus cores of CPU time,
 * memoryMiB of memory and PIDS_MAX processes (./cgroup; where the host has none to offer, it
 * runs without). Its network namespace has only a loopback: it reaches nothing on the host,
 * and each declared port is forwarded from the host's 127.0.0.1 to the same port on the
 * instance's loopback, where the image listens on $PORT_<guest port>.
 *
 * What runs as root on the host before the sandbox exists (sh, unshare, mount, ...) gets
 * HOST_TOOL_ENV, never the image's environment: that is applied by `env -i` from a static
 * busybox mounted into the instance's root, after chroot and the change of uid, for the
 * entrypoint alone. Output goes through a capped, rotated log (startLogCapper).
 */

import { createHash } from "crypto";
import * as fs from "fs";
import * as net from "net";
import * as path from "path";
import type { Manifest } from "../../image";
import { GciError, invalid, precondition } from "../../common/errors";
import { InstanceCgroups, createInstanceCgroups, removeInstanceCgroups } from "./cgroup";
import { loadHandle, LOG_FILE, saveHandle } from "./handle";
import {
  checkSpec,
  endHelpers,
  HelperProcess,
  isSameProcess,
  procStat,
  signalGroup,
  signalProcess,
  spawnDetached,
  startLogCapper,
  tailLines,
  waitForReady,
  waitGone,
} from "./host";
import { HostTools, hostTools, sandboxArgs } from "./process-sandbox";
import type { InstanceDriver, InstanceHandle, InstanceSpec } from "./types";
import { claimUid, releaseUid } from "./uid";

const OUTPUT_LOG = LOG_FILE.process;
const DEFAULT_GRACE_MS = 5000;
/** Ports a process instance may declare (see validate). */
const MAX_PORTS = 7;

/**
 * Options of the process driver: none any more. Every instance runs as a uid of its own
 * (./uid), so there is no user to choose.
 */
export type ProcessDriverArgs = Record<string, never>;

/** Runs process instances: sandboxed processes from the image's root directory. */
export class ProcessDriver implements InstanceDriver {
  readonly kind = "process" as const;

  /** Throws INVALID_ARGUMENT naming what the image lacks to run as a process instance. */
  validate(manifest: Manifest): void {
    if (manifest.driver !== "process") {
      throw invalid(
        `image "${manifest.name}" is for the "${manifest.driver}" driver, not "process": start it with ` +
          `the ${manifest.driver} driver, or build a process image with an entrypoint`,
      );
    }
    if (manifest.entrypoint === undefined || manifest.entrypoint.length === 0) {
      throw invalid(
        `image "${manifest.name}" has no entrypoint: the process driver runs a program from the image; ` +
          `set "entrypoint" in the manifest, e.g. ["bin/serve"]`,
      );
    }
    // `env -i` takes NAME=VALUE words up to the first word without "=": the program.
    if (manifest.entrypoint[0].includes("=")) {
      throw invalid(
        `the entrypoint "${manifest.entrypoint[0]}" of image "${manifest.name}" holds "="; rename the program`,
      );
    }
    // The listening sockets reach the sandbox as fds 3 to 9 (sh redirects single-digit fds only).
    if ((manifest.ports ?? []).length > MAX_PORTS) {
      throw invalid(
        `image "${manifest.name}" declares ${(manifest.ports ?? []).length} ports; a process instance ` +
          `forwards at most ${MAX_PORTS}: declare fewer`,
      );
    }
    const badName = Object.keys(manifest.env ?? {}).find((name) => !/^[A-Za-z_][A-Za-z0-9_]*$/.test(name));
    if (badName !== undefined) {
      throw invalid(
        `image "${manifest.name}" sets env "${badName}", not a variable name; use [A-Za-z_][A-Za-z0-9_]*`,
      );
    }
  }

  /** Starts the process instance detached and returns its handle (also saved in the run directory). */
  async start(spec: InstanceSpec): Promise<InstanceHandle> {
    this.validate(spec.manifest);
    checkSpec(spec);
    const existing = loadHandle(spec.runDir);
    // Idempotent: a second start of the same instance returns the one that runs.
    if (existing !== undefined && existing.id === spec.id && this.isRunning(existing)) return existing;
    const tools = hostTools();
    if (/[,:]/.test(spec.imageDir) || /[,:]/.test(spec.runDir)) {
      throw invalid(
        `imageDir "${spec.imageDir}" or runDir "${spec.runDir}" holds "," or ":", which an overlay ` +
          `mount cannot take; keep images and instances under paths without them`,
      );
    }
    const entry = path.join(spec.imageDir, spec.manifest.entrypoint![0]);
    if (!fs.existsSync(entry)) {
      throw precondition(
        `the entrypoint "${spec.manifest.entrypoint![0]}" of image "${spec.manifest.name}" is missing ` +
          `from ${spec.imageDir}; extract the image there again (extractImage)`,
      );
    }
    fs.mkdirSync(path.join(spec.runDir, "rootfs"), { recursive: true });
    fs.mkdirSync(path.join(spec.runDir, "scratch"), { recursive: true });
    const uid = claimUid(spec.runDir);
    try {
      return await this.launch(spec, tools, uid);
    } catch (e) {
      releaseUid(uid, spec.runDir);
      throw e;
    }
  }

  /** Starts the sandbox as `uid` (it starts the port forwarders) and its log writer; saves the handle. */
  private async launch(spec: InstanceSpec, tools: HostTools, uid: number): Promise<InstanceHandle> {
    // Its CPU, memory and process limits: cgroups the first process joins before anything else runs.
    const cgroups = instanceCgroups(spec);
    const logFile = path.join(spec.runDir, OUTPUT_LOG);
    // The host's side of each forwarded port: listening on 127.0.0.1 from here on (no other
    // program can take the port meanwhile), handed to the sandbox as fds 3, 4, ...
    const listeners: Listener[] = [];
    const ports: Record<string, number> = {};
    let pid: number;
    let capper: HelperProcess;
    try {
      for (const guestPort of spec.manifest.ports ?? []) {
        listeners.push(await listenOnLoopback());
        ports[String(guestPort)] = listeners[listeners.length - 1].port;
      }
      const args = sandboxArgs(spec, tools, uid, ports, cgroups);
      const fds = listeners.map((l) => l.fd);
      ({ pid, capper } = await spawnSandbox(tools, args, spec.runDir, logFile, fds));
    } catch (e) {
      await this.discard(spec, cgroups);
      throw e;
    } finally {
      // The sandbox holds the listening sockets now (or none is needed any more).
      for (const listener of listeners) listener.server.close();
    }
    const stat = procStat(pid);
    if (stat === undefined) {
      await this.discard(spec, cgroups);
      throw precondition(
        `process instance "${spec.id}" ended at once: ${tailLines(logFile, 5).join(" | ") || "no output"}`,
      );
    }
    const addresses: Record<string, string> = {};
    for (const [guestPort, hostPort] of Object.entries(ports)) addresses[guestPort] = `127.0.0.1:${hostPort}`;
    const handle: InstanceHandle = {
      id: spec.id,
      kind: "process",
      pid,
      addresses,
      logFile,
      runDir: spec.runDir,
      startTime: stat.startTime,
      ...(cgroups ? { cgroups: cgroups.dirs } : {}),
      uid,
      helpers: [{ pid: capper.pid, startTime: capper.startTime }],
    };
    saveHandle(handle);
    return handle;
  }

  /** After a failed start: its cgroups go (nothing runs in them). */
  private async discard(spec: InstanceSpec, cgroups: InstanceCgroups | undefined): Promise<void> {
    try {
      await removeInstanceCgroups(cgroups?.dirs ?? []);
    } catch (e) {
      // The start's own error is the one to report; the empty cgroup is only left behind.
      console.error(
        `gci: cannot remove the cgroups of process instance "${spec.id}": ${(e as Error).message}`,
      );
    }
  }

  waitReady(handle: InstanceHandle, timeoutMs: number): Promise<void> {
    return waitForReady(handle, timeoutMs, { noun: "process instance", logName: "output" });
  }

  isRunning(handle: InstanceHandle): boolean {
    return isSameProcess(handle.pid, handle.startTime);
  }

  /**
   * SIGTERM to the entrypoint (through the namespace's init), then SIGKILL to the whole group
   * after `graceMs`. When the namespace's init ends, the kernel kills everything left in it; the
   * log writer and the forwarders end with it, and the instance's uid is given back.
   */
  async stop(handle: InstanceHandle, graceMs: number = DEFAULT_GRACE_MS): Promise<void> {
    await this.end(handle, graceMs);
    await endHelpers(handle.helpers ?? [], 5000);
    // Once nothing runs in them, its cgroups go too (one the kernel still holds stays, empty:
    // not a reason to fail the stop).
    try {
      await removeInstanceCgroups(handle.cgroups ?? []);
    } catch (e) {
      console.error(
        `gci: cannot remove the cgroups of process instance "${handle.id}": ${(e as Error).message}`,
      );
    }
    if (handle.uid !== undefined) releaseUid(handle.uid, handle.runDir);
  }

  private async end(handle: InstanceHandle, graceMs: number): Promise<void> {
    if (!this.isRunning(handle)) return;
    const init = namespaceInit(handle.pid);
    if (init !== undefined) signalProcess(init.pid, "SIGTERM");
    else signalGroup(handle.pid, "SIGTERM");
    const initGone = async (ms: number): Promise<boolean> => {
      const deadline = Date.now() + ms;
      while (init !== undefined && isSameProcess(init.pid, init.startTime)) {
        if (Date.now() >= deadline) return false;
        await new Promise((r) => setTimeout(r, 20));
      }
      return true;
    };
    if ((await waitGone(handle, graceMs)) && (await initGone(1000))) return;
    if (this.isRunning(handle)) signalGroup(handle.pid, "SIGKILL");
    if (init !== undefined && isSameProcess(init.pid, init.startTime)) signalProcess(init.pid, "SIGKILL");
    if ((await waitGone(handle, 5000)) && (await initGone(5000))) return;
    throw new GciError(
      "INTERNAL",
      `process instance "${handle.id}" (pid ${handle.pid}) still runs after SIGKILL; look at ` +
        `/proc/${handle.pid}/status (a process stuck in the kernel) and try stop again`,
    );
  }
}

/**
 * The instance's cgroups with its limits, named after its id and run directory (unique on this
 * host, also across worlds); undefined where the host offers none (see cgroupSupport).
 */
function instanceCgroups(spec: InstanceSpec): InstanceCgroups | undefined {
  const name = `${spec.id}-${createHash("sha256").update(spec.runDir).digest("hex").slice(0, 8)}`;
  try {
    return createInstanceCgroups(name, spec.vcpus, spec.memoryMiB);
  } catch (e) {
    throw precondition(`cannot create the cgroups of process instance "${spec.id}": ${(e as Error).message}`);
  }
}

/** The sandbox's init: the one child of the unshare process, with its start time. */
function namespaceInit(pid: number): { pid: number; startTime: string } | undefined {
  let children: string;
  try {
    children = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8");
  } catch {
    return undefined;
  }
  const child = Number(children.trim().split(" ")[0]);
  if (!Number.isInteger(child) || child <= 0) return undefined;
  const stat = procStat(child);
  return stat === undefined ? undefined : { pid: child, startTime: stat.startTime };
}

/**
 * Starts the log writer of `logFile`, then the sandbox (sh with `args`) writing to it, with
 * `fds` as its fds 3, 4, ...: the pid of the sandbox, and the log writer.
 */
async function spawnSandbox(
  tools: HostTools,
  args: string[],
  cwd: string,
  logFile: string,
  fds: number[],
): Promise<{ pid: number; capper: HelperProcess }> {
  const log = await startLogCapper(logFile);
  try {
    const pid = await spawnDetached(tools.sh, args, cwd, log.input, undefined, fds);
    return { pid, capper: { pid: log.pid, startTime: log.startTime } };
  } finally {
    // The sandbox holds the log's input now; the writer ends after everything in it.
    log.input.destroy();
  }
}

interface Listener {
  readonly server: net.Server;
  readonly port: number;
  readonly fd: number;
}

async function listenOnLoopback(): Promise<Listener> {
  const server = net.createServer();
  // Until the sandbox takes it over, nobody knows the port; a connection that came anyway is closed.
  server.on("connection", (socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: "127.0.0.1", port: 0, exclusive: true }, resolve);
  });
  server.unref();
  // Node does not document the descriptor of a server; its libuv handle has it.
  const fd = (server as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== "number" || fd < 0) {
    server.close();
    throw new GciError("INTERNAL", "cannot get the file descriptor of a listening socket from Node.js");
  }
  return { server, port: (server.address() as net.AddressInfo).port, fd };
}
