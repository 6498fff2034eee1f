/**
 * The process driver: each instance is a sandboxed, supervised process started from the
 * image's root directory — a "process instance", never a VM. It exists for scale (hundreds of
 * instances on one machine), where booting a kernel per instance would not fit.
 *
 * Sandbox, per instance: its own mount and pid namespaces (`unshare`); a root that is an
 * overlay of the image (read-only, shared by all instances) and a tmpfs of its own (so writes
 * vanish with it and cost memory, capped at memoryMiB); a private /proc, a /dev holding only
 * null, zero, random and urandom; and no root privileges (uid/gid 65534 by default). Its
 * cgroups hold it to vcpus cores of CPU time and memoryMiB of memory (./cgroup; where the host
 * has none to offer, it runs without). The network stays the host's, so a process listens on
 * 127.0.0.1 at the port it is given.
 */

import { createHash } from "crypto";
import * as fs from "fs";
import * as path from "path";
import type { Manifest } from "../image";
import { GciError, invalid, precondition } from "../errors";
import { InstanceCgroups, createInstanceCgroups, removeInstanceCgroups } from "./cgroup";
import { loadHandle, LOG_FILE, saveHandle } from "./handle";
import {
  checkSpec,
  findOnPath,
  freePort,
  isSameProcess,
  procStat,
  signalGroup,
  signalProcess,
  spawnDetached,
  tailLines,
  waitForReady,
  waitGone,
} from "./host";
import type { InstanceDriver, InstanceHandle, InstanceSpec } from "./types";

/** Options of the process driver. */
export interface ProcessDriverArgs {
  /** User and group id the entrypoint runs as. @default 65534 (nobody) for both */
  readonly uid?: number;
  readonly gid?: number;
}

const OUTPUT_LOG = LOG_FILE.process;
const DEFAULT_GRACE_MS = 5000;
/** PATH of the sandbox's set-up on the host, and of the entrypoint unless the image sets one. */
const STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * Runs as PID 1 of the new pid namespace, still in the host's root: builds the instance's root
 * and starts the entrypoint in it. It stays as the namespace's init, so that SIGTERM reaches the
 * entrypoint (a PID 1 without a handler would ignore it) and its end ends everything in there.
 * Arguments: image rootfs scratch sizeMiB uid:gid chroot entrypoint args...; PATH is the guest's.
 * The init reaps only the entrypoint: orphans of the entrypoint stay zombies until the instance ends.
 */
const SANDBOX_SCRIPT = `
set -e
child="" stopping=""
trap 'stopping=1; [ -z "$child" ] || kill -TERM "$child" 2>/dev/null' TERM INT
image=$1 rootfs=$2 scratch=$3 size=$4 user=$5 chroot_bin=$6 guest_path=$PATH
shift 6
PATH=${STANDARD_PATH}
mount -t tmpfs -o "mode=0755,size=\${size}m" gci-scratch "$scratch"
mkdir "$scratch/upper" "$scratch/work"
mount -t overlay -o "lowerdir=$image,upperdir=$scratch/upper,workdir=$scratch/work" gci-root "$rootfs"
for dir in dev proc tmp; do
  if [ -L "$rootfs/$dir" ] || { [ -e "$rootfs/$dir" ] && [ ! -d "$rootfs/$dir" ]; }; then
    echo "gci: the image's /$dir is not a directory; the process driver mounts its own /$dir there" >&2
    exit 70
  fi
done
mkdir -p "$rootfs/dev" "$rootfs/proc" "$rootfs/tmp"
mount -t tmpfs -o mode=0755,size=64k,nosuid,noexec gci-dev "$rootfs/dev"
mknod -m 666 "$rootfs/dev/null" c 1 3
mknod -m 666 "$rootfs/dev/zero" c 1 5
mknod -m 666 "$rootfs/dev/random" c 1 8
mknod -m 666 "$rootfs/dev/urandom" c 1 9
mount -t proc -o nosuid,nodev,noexec gci-proc "$rootfs/proc"
chmod 1777 "$rootfs/tmp"
set +e
PATH=$guest_path "$chroot_bin" --userspec="$user" "$rootfs" "$@" </dev/null &
child=$!
[ -z "$stopping" ] || kill -TERM "$child" 2>/dev/null
while :; do
  wait "$child"
  status=$?
  kill -0 "$child" 2>/dev/null || exit "$status"
done
`;

/** Runs process instances: sandboxed processes from the image's root directory. */
export class ProcessDriver implements InstanceDriver {
  readonly kind = "process" as const;
  private readonly user: string;

  constructor(args: ProcessDriverArgs = {}) {
    const uid = args.uid ?? 65534;
    const gid = args.gid ?? 65534;
    if (!Number.isInteger(uid) || uid < 0 || !Number.isInteger(gid) || gid < 0) {
      throw invalid(`uid ${uid} and gid ${gid} must be whole numbers >= 0, e.g. 65534 (nobody)`);
    }
    this.user = `${uid}:${gid}`;
  }

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

    const rootfs = path.join(spec.runDir, "rootfs");
    const scratch = path.join(spec.runDir, "scratch");
    fs.mkdirSync(rootfs, { recursive: true });
    fs.mkdirSync(scratch, { recursive: true });

    const addresses: Record<string, string> = {};
    const portEnv: Record<string, string> = {};
    for (const guestPort of spec.manifest.ports ?? []) {
      const hostPort = await freePort();
      addresses[String(guestPort)] = `127.0.0.1:${hostPort}`;
      portEnv[`PORT_${guestPort}`] = String(hostPort);
    }
    const imageEnv = spec.manifest.env ?? {};
    const env: Record<string, string> = {
      HOME: "/",
      ...imageEnv,
      PATH: imageEnv.PATH ?? STANDARD_PATH,
      GCI_ID: spec.id,
      GCI_DC: spec.datacenter,
      GCI_DIGEST: spec.digest,
      ...portEnv,
    };
    const [program, ...programArgs] = spec.manifest.entrypoint!;
    const args = [
      ...["--mount", "--pid", "--fork", "--kill-child"],
      ...[tools.sh, "-c", SANDBOX_SCRIPT, "gci-sandbox"],
      ...[spec.imageDir, rootfs, scratch, String(spec.memoryMiB), this.user, tools.chroot],
      ...[`/${program}`, ...programArgs],
    ];

    // Its CPU and memory limits: a cgroup the first process joins before anything else runs.
    const cgroups = instanceCgroups(spec);
    const log = fs.openSync(path.join(spec.runDir, OUTPUT_LOG), "w");
    let pid: number;
    try {
      pid = cgroups
        ? await spawnDetached(
            tools.sh,
            [
              "-c",
              JOIN_CGROUPS,
              "gci-cgroups",
              String(cgroups.procs.length),
              ...cgroups.procs,
              tools.unshare,
              ...args,
            ],
            spec.runDir,
            log,
            env,
          )
        : await spawnDetached(tools.unshare, args, spec.runDir, log, env);
    } finally {
      fs.closeSync(log);
    }
    const stat = procStat(pid);
    if (stat === undefined) {
      await removeInstanceCgroups(cgroups?.dirs ?? []).catch(() => undefined);
      throw precondition(
        `process instance "${spec.id}" ended at once: ${tailLines(path.join(spec.runDir, OUTPUT_LOG), 5).join(" | ") || "no output"}`,
      );
    }
    const handle: InstanceHandle = {
      id: spec.id,
      kind: "process",
      pid,
      addresses,
      logFile: path.join(spec.runDir, OUTPUT_LOG),
      runDir: spec.runDir,
      startTime: stat.startTime,
      ...(cgroups ? { cgroups: cgroups.dirs } : {}),
    };
    saveHandle(handle);
    return handle;
  }

  waitReady(handle: InstanceHandle, timeoutMs: number): Promise<void> {
    return waitForReady(handle, timeoutMs, { noun: "process instance", logName: "output" });
  }

  isRunning(handle: InstanceHandle): boolean {
    return isSameProcess(handle.pid, handle.startTime);
  }

  /**
   * SIGTERM to the entrypoint (through the namespace's init), then SIGKILL to the whole group
   * after `graceMs`. When the namespace's init ends, the kernel kills everything left in it.
   */
  async stop(handle: InstanceHandle, graceMs: number = DEFAULT_GRACE_MS): Promise<void> {
    await this.end(handle, graceMs);
    // Once nothing runs in them, its cgroups go too (one the kernel still holds stays, empty:
    // not a reason to fail the stop).
    await removeInstanceCgroups(handle.cgroups ?? []).catch(() => undefined);
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

/** Moves this shell into the cgroups named by its arguments ("<n> <procs file>..."), then execs the rest. */
const JOIN_CGROUPS = `
n=$1; shift
while [ "$n" -gt 0 ]; do echo $$ > "$1"; shift; n=$((n - 1)); done
exec "$@"
`;

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

interface HostTools {
  readonly unshare: string;
  readonly chroot: string;
  readonly sh: string;
}

let tools: HostTools | undefined;

/** unshare, chroot and sh on this host; FAILED_PRECONDITION with the fix when one is missing or not root. */
function hostTools(): HostTools {
  if (tools !== undefined) return tools;
  if (process.getuid?.() !== 0) {
    throw precondition(
      `the process driver needs root to create mount and pid namespaces (uid is ${process.getuid?.()}); ` +
        `run the cluster manager as root, or use the qemu driver`,
    );
  }
  const find = (name: string, pkg: string): string => {
    const found =
      findOnPath(name) ?? [`/usr/bin/${name}`, `/usr/sbin/${name}`, `/bin/${name}`].find(fs.existsSync);
    if (found === undefined) {
      throw precondition(
        `${name} is not installed, and the process driver needs it: run apt-get install -y ${pkg}`,
      );
    }
    return found;
  };
  tools = {
    unshare: find("unshare", "util-linux"),
    chroot: find("chroot", "coreutils"),
    sh: find("sh", "dash"),
  };
  return tools;
}
