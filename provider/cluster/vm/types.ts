import type { Manifest } from "../../image";

/** What kind of instance a driver runs: a QEMU guest ("vm") or a sandboxed process ("process"). */
export type InstanceKind = "vm" | "process";

/** Everything a driver needs to start one instance. */
export interface InstanceSpec {
  /** Unique id, e.g. "vm-3f2a…" (also the guest's name). */
  readonly id: string;
  readonly datacenter: string;
  readonly digest: string;
  /** The image extracted (read-only for the driver): kernel/initrd/disk, or a root directory. */
  readonly imageDir: string;
  readonly manifest: Manifest;
  readonly vcpus: number;
  readonly memoryMiB: number;
  /** A folder of this instance's own: pid file, QMP socket, console log, handle. */
  readonly runDir: string;
}

/** A started instance, as persisted in <runDir>/instance.json so a restarted cluster manager finds it. */
export interface InstanceHandle {
  readonly id: string;
  readonly kind: InstanceKind;
  readonly pid: number;
  /** Guest port -> "127.0.0.1:<host port>". */
  readonly addresses: Readonly<Record<string, string>>;
  /** The serial console (vm) or stdout+stderr (process). */
  readonly logFile: string;
  readonly runDir: string;
  /** Process start time (from /proc/<pid>/stat), so a recycled pid is not mistaken for the instance. */
  readonly startTime: string;
  /** The cgroup directories holding its CPU, memory and process limits (process instances), removed when it ends. */
  readonly cgroups?: readonly string[];
  /** The uid (and gid) it runs as, its own (process instances; see ./uid), given back when it stops. */
  readonly uid?: number;
  /** Processes serving it from outside (its log writer), ended with it. */
  readonly helpers?: readonly { readonly pid: number; readonly startTime: string }[];
}

/** Runs instances of one kind. Instances outlive the cluster manager that started them. */
export interface InstanceDriver {
  readonly kind: InstanceKind;
  /** Throws INVALID_ARGUMENT naming what the image lacks for this driver (e.g. no kernel). */
  validate(manifest: Manifest): void;
  /** Starts the instance detached and returns as soon as its process runs (not yet ready). */
  start(spec: InstanceSpec): Promise<InstanceHandle>;
  /**
   * Resolves once the instance is ready — observed, not assumed: the ready marker on its
   * console, then every declared port answering — or rejects after `timeoutMs` (or when it dies).
   */
  waitReady(handle: InstanceHandle, timeoutMs: number): Promise<void>;
  /** True while the instance's process runs (same pid and start time). */
  isRunning(handle: InstanceHandle): boolean;
  /** Stops it: a clean shutdown within `graceMs`, then SIGKILL. Idempotent. */
  stop(handle: InstanceHandle, graceMs?: number): Promise<void>;
}
