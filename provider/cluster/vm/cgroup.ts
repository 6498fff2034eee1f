/**
 * CPU, memory and process limits for process instances, through the host's cgroups: each
 * instance gets a cgroup of its own below the cluster manager's, allowed `vcpus` cores of CPU
 * time per period, `memoryMiB` of memory (what it writes to its tmpfs included; beyond it the
 * kernel's OOM killer ends a process of the instance) and PIDS_MAX processes and threads (so a
 * fork bomb meets its own limit, not the host's). Both cgroup v2 (one unified hierarchy) and v1
 * (the "cpu", "memory" and "pids" hierarchies) are handled; where neither can be written (not root, not
 * mounted), `cgroupSupport()` says why and instances run without these limits.
 */
import * as fs from "fs";
import * as path from "path";

/** The cgroups made for one instance. */
export interface InstanceCgroups {
  /** The cgroup directories, removed when the instance ends. */
  readonly dirs: string[];
  /** The files a process writes its pid to in order to join them. */
  readonly procs: string[];
}

/** Where instance cgroups go on this host, or why they cannot. */
export type CgroupSupport =
  | { readonly version: 1; readonly cpu: string; readonly memory: string; readonly pids: string }
  | { readonly version: 2; readonly root: string }
  | { readonly version: 0; readonly reason: string };

const PERIOD_US = 100_000;
/** Processes and threads one instance may hold at once: room for a busy server, not for a fork bomb. */
export const PIDS_MAX = 1024;
const MOUNTS = "/proc/self/mounts";

let support: CgroupSupport | undefined;

/** Finds the hierarchies once: the parent directory of GCI's instance cgroups in each. */
export function cgroupSupport(): CgroupSupport {
  support ??= probe();
  return support;
}

function probe(): CgroupSupport {
  if (process.getuid?.() !== 0) return { version: 0, reason: "the cluster manager does not run as root" };
  let mounts: string[][];
  let own: string[][];
  try {
    mounts = fs
      .readFileSync(MOUNTS, "utf8")
      .trim()
      .split("\n")
      .map((l) => l.split(" "));
    own = fs
      .readFileSync("/proc/self/cgroup", "utf8")
      .trim()
      .split("\n")
      .map((l) => l.split(":"));
  } catch (e) {
    return { version: 0, reason: `cannot read the cgroup mounts (${(e as Error).message})` };
  }
  // v1: a hierarchy per controller, mounted with the controller's name among its options.
  const v1 = (controller: string): string | undefined => {
    const mount = mounts.find((m) => m[2] === "cgroup" && (m[3] ?? "").split(",").includes(controller));
    const mine = own.find((c) => c[1].split(",").includes(controller));
    return mount && mine ? path.join(mount[1], mine[2] ?? "/", "gci") : undefined;
  };
  const cpu = v1("cpu");
  const memory = v1("memory");
  const pids = v1("pids");
  if (cpu && memory && pids) return writable({ version: 1, cpu, memory, pids }, [cpu, memory, pids]);
  // v2: one hierarchy; a dedicated child of its root, with the cpu and memory controllers on.
  const unified = mounts.find((m) => m[2] === "cgroup2" && m[1] === "/sys/fs/cgroup");
  if (unified) {
    const root = path.join(unified[1], "gci");
    try {
      const controllers = fs.readFileSync(path.join(unified[1], "cgroup.controllers"), "utf8");
      if (!["cpu", "memory", "pids"].every((c) => new RegExp(`\\b${c}\\b`).test(controllers))) {
        return {
          version: 0,
          reason: `cgroup v2 offers no cpu, memory and pids controllers (${controllers.trim()})`,
        };
      }
      fs.writeFileSync(path.join(unified[1], "cgroup.subtree_control"), "+cpu +memory +pids");
      fs.mkdirSync(root, { recursive: true });
      fs.writeFileSync(path.join(root, "cgroup.subtree_control"), "+cpu +memory +pids");
    } catch (e) {
      return { version: 0, reason: `cannot enable cgroup v2 controllers (${(e as Error).message})` };
    }
    return writable({ version: 2, root }, [root]);
  }
  return {
    version: 0,
    reason: "no cgroup hierarchies with the cpu, memory and pids controllers are mounted",
  };
}

function writable(found: CgroupSupport, parents: string[]): CgroupSupport {
  try {
    for (const dir of parents) fs.mkdirSync(dir, { recursive: true });
    return found;
  } catch (e) {
    return { version: 0, reason: `cannot create ${parents.join(" and ")} (${(e as Error).message})` };
  }
}

/**
 * Creates the cgroups of instance `id` with its limits, or returns undefined when this host
 * has none to offer (see cgroupSupport). A cgroup left by an earlier start is reused.
 */
export function createInstanceCgroups(
  id: string,
  vcpus: number,
  memoryMiB: number,
): InstanceCgroups | undefined {
  const found = cgroupSupport();
  const bytes = String(memoryMiB * 1024 * 1024);
  const quota = String(vcpus * PERIOD_US);
  const make = (dir: string, limits: Record<string, string>): string => {
    fs.mkdirSync(dir, { recursive: true });
    for (const [file, value] of Object.entries(limits)) fs.writeFileSync(path.join(dir, file), value);
    return dir;
  };
  switch (found.version) {
    case 0:
      return undefined;
    case 1: {
      const cpu = make(path.join(found.cpu, id), {
        "cpu.cfs_period_us": String(PERIOD_US),
        "cpu.cfs_quota_us": quota,
      });
      const memory = make(path.join(found.memory, id), { "memory.limit_in_bytes": bytes });
      const pids = make(path.join(found.pids, id), { "pids.max": String(PIDS_MAX) });
      const dirs = [cpu, memory, pids];
      return { dirs, procs: dirs.map((d) => path.join(d, "cgroup.procs")) };
    }
    case 2: {
      const dir = make(path.join(found.root, id), {
        "cpu.max": `${quota} ${PERIOD_US}`,
        "memory.max": bytes,
        "pids.max": String(PIDS_MAX),
      });
      return { dirs: [dir], procs: [path.join(dir, "cgroup.procs")] };
    }
  }
}

/** Removes an ended instance's cgroups (the kernel refuses while a process is still in one). */
export async function removeInstanceCgroups(dirs: readonly string[]): Promise<void> {
  for (const dir of dirs) {
    for (let attempt = 0; ; attempt++) {
      try {
        fs.rmdirSync(dir);
        break;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "ENOENT") break;
        if (code !== "EBUSY" || attempt >= 50) throw e;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }
}
