/**
 * The qemu driver: each instance is a QEMU guest booted from the image's kernel and initramfs,
 * with user-mode networking and its ports forwarded to 127.0.0.1. QEMU runs detached (its own
 * process group, stdio to files), so VMs outlive the cluster manager that started them.
 */

import { execFile, spawn } from "child_process";
import * as fs from "fs";
import * as net from "net";
import * as os from "os";
import * as path from "path";
import { promisify } from "util";
import type { Manifest } from "../../image";
import { cacheRoot } from "../../common/paths";
import { checkDiskFile, isQcow2 } from "../../image/qcow2";
import { GciError, invalid, precondition } from "../../common/errors";
import { loadHandle, LOG_FILE, saveHandle } from "./handle";
import {
  checkSpec,
  endHelpers,
  findOnPath,
  freePort,
  isSameProcess,
  procStat,
  READY_MARKER,
  signalProcess,
  spawnDetached,
  startLogCapper,
  tailLines,
  waitForReady,
  waitGone,
} from "./host";
import type { InstanceDriver, InstanceHandle, InstanceSpec } from "./types";
import { claimUid, releaseUid } from "./uid";

const execFileP = promisify(execFile);

/** How QEMU executes the guest: hardware virtualization ("kvm") or software emulation ("tcg"). */
export type QemuAccelerator = "kvm" | "tcg";

/** Options of the qemu driver. */
export interface QemuDriverArgs {
  /** The QEMU binary. @default "qemu-system-x86_64" from PATH */
  readonly qemu?: string;
  /**
   * "kvm", "tcg", or "auto": KVM only when a probe boots a kernel under it, else TCG.
   * @default $GCI_QEMU_ACCEL, or "auto" when it is unset
   */
  readonly accel?: QemuAccelerator | "auto";
}

/** The QEMU binary the driver runs unless told otherwise. */
export const QEMU_BINARY = "qemu-system-x86_64";

/** Files in an instance's run directory (QEMU runs with it as its working directory). */
const CONSOLE_LOG = LOG_FILE.vm;
const QEMU_LOG = "qemu.log";
const QMP_SOCKET = "qmp.sock";
const PID_FILE = "qemu.pid";
/** The throwaway qcow2 layer that takes a guest's writes to its disk. */
const DISK_OVERLAY = "disk-overlay.qcow2";

/** Default time `stop` gives the guest before it signals QEMU. */
const DEFAULT_GRACE_MS = 5000;
/** Linux on x86 takes at most 2048 bytes of command line; leave room for the driver's part. */
const MAX_IMAGE_CMDLINE_BYTES = 1400;
/** The kernel hands at most 32 variables to init, a few of its own among them. */
const MAX_ENV_ENTRIES = 24;
const ENV_NAME = /^[A-Z_][A-Z0-9_]*$/;
const ENV_VALUE = /^[^\s"\\]*$/;

/** Runs VMs as detached QEMU processes. */
export class QemuDriver implements InstanceDriver {
  readonly kind = "vm" as const;
  private readonly qemu: string;
  private readonly accel: QemuAccelerator | "auto";

  constructor(args: QemuDriverArgs = {}) {
    this.qemu = args.qemu ?? QEMU_BINARY;
    this.accel = args.accel ?? acceleratorFromEnv();
  }

  /** Throws INVALID_ARGUMENT naming what the image lacks to boot as a VM. */
  validate(manifest: Manifest): void {
    const name = manifest.name;
    if (manifest.driver !== "qemu") {
      throw invalid(
        `image "${name}" is for the "${manifest.driver}" driver, not "qemu": start it with the ` +
          `${manifest.driver} driver, or build a qemu image with --kernel and --initrd`,
      );
    }
    for (const part of ["kernel", "initrd"] as const) {
      if (manifest[part] === undefined) {
        throw invalid(
          `image "${name}" has no ${part}: the qemu driver boots a kernel and an initramfs; ` +
            `build the image with --kernel and --initrd`,
        );
      }
    }
    const extra = imageCmdline(manifest);
    if (Buffer.byteLength(extra) > MAX_IMAGE_CMDLINE_BYTES) {
      throw invalid(
        `image "${name}" asks for ${Buffer.byteLength(extra)} bytes of kernel command line (cmdline ` +
          `and env); the qemu driver allows ${MAX_IMAGE_CMDLINE_BYTES}: shorten them`,
      );
    }
    const env = Object.entries(manifest.env ?? {});
    if (env.length > MAX_ENV_ENTRIES) {
      throw invalid(
        `image "${name}" sets ${env.length} environment variables; the qemu driver passes them to ` +
          `init on the kernel command line, which takes at most ${MAX_ENV_ENTRIES}: drop some`,
      );
    }
    for (const [key, value] of env) {
      if (!ENV_NAME.test(key) || !ENV_VALUE.test(value)) {
        throw invalid(
          `image "${name}" sets env ${JSON.stringify(key)}=${JSON.stringify(value)}, which cannot ` +
            `travel on a kernel command line: use names of A-Z, 0-9 and _ and values without ` +
            `spaces, quotes or backslashes`,
        );
      }
    }
  }

  /** Boots the guest detached and returns its handle (also saved in the run directory). */
  async start(spec: InstanceSpec): Promise<InstanceHandle> {
    this.validate(spec.manifest);
    checkSpec(spec);
    const existing = loadHandle(spec.runDir);
    // Idempotent: a second start of the same instance returns the VM that runs.
    if (existing !== undefined && existing.id === spec.id && this.isRunning(existing)) return existing;

    const manifest = spec.manifest;
    const kernel = imageFile(spec, manifest.kernel!, "kernel");
    const initrd = imageFile(spec, manifest.initrd!, "initrd");
    const disk = manifest.disk === undefined ? undefined : imageFile(spec, manifest.disk, "disk");
    // Before QEMU opens anything: it would follow a backing file as root.
    if (disk !== undefined) checkDiskFile(`"${manifest.disk}" of image "${manifest.name}"`, disk);
    const qemu = resolveQemu(this.qemu);
    const accel = await chooseAccelerator(qemu, kernel, this.accel);

    fs.mkdirSync(spec.runDir, { recursive: true });
    for (const stale of [QMP_SOCKET, PID_FILE, DISK_OVERLAY])
      fs.rmSync(path.join(spec.runDir, stale), { force: true });

    const addresses: Record<string, string> = {};
    const forwards: string[] = [];
    for (const guestPort of manifest.ports ?? []) {
      const hostPort = await freePort();
      addresses[String(guestPort)] = `127.0.0.1:${hostPort}`;
      forwards.push(`hostfwd=tcp:127.0.0.1:${hostPort}-:${guestPort}`);
    }

    const cmdline = [
      "console=ttyS0 quiet panic=-1",
      `gci.id=${spec.id} gci.dc=${spec.datacenter} gci.digest=${spec.digest}`,
      imageCmdline(manifest),
    ]
      .filter((part) => part !== "")
      .join(" ");
    const args = [
      ...["-name", qemuValue(spec.id)],
      ...(accel.accel === "kvm" ? ["-accel", "kvm", "-cpu", "max"] : ["-accel", "tcg"]),
      ...["-m", String(spec.memoryMiB), "-smp", String(spec.vcpus)],
      ...["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"],
      ...["-kernel", kernel, "-initrd", initrd, "-append", cmdline],
      ...(disk === undefined ? [] : await diskArgs(disk, spec.runDir)),
      // The console goes to QEMU's stdout, which the log writer caps and rotates (startLogCapper).
      ...["-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console"],
      ...["-qmp", `unix:${QMP_SOCKET},server=on,wait=off`, "-pidfile", PID_FILE],
      // restrict=on: the guest reaches nothing but what is forwarded to it; without it,
      // 10.0.2.2 is the host's 127.0.0.1, where every cluster manager listens.
      ...["-nic", ["user", "model=virtio-net-pci", "restrict=on", ...forwards].join(",")],
      ...confinement(claimQemuUid(spec.runDir)),
    ];

    const log = fs.openSync(path.join(spec.runDir, QEMU_LOG), "w");
    const consoleLog = await startLogCapper(path.join(spec.runDir, CONSOLE_LOG));
    let pid: number;
    try {
      pid = await spawnDetached(qemu, args, spec.runDir, { stdout: consoleLog.input, stderr: log });
    } catch (e) {
      releaseQemuUid(spec.runDir);
      throw e;
    } finally {
      fs.closeSync(log);
      // QEMU holds the console's input now; the log writer ends after it.
      consoleLog.input.destroy();
    }
    const stat = procStat(pid);
    if (stat === undefined) {
      releaseQemuUid(spec.runDir);
      const said = tailLines(path.join(spec.runDir, QEMU_LOG), 5).join(" | ");
      throw precondition(
        `QEMU exited at once for VM "${spec.id}": ${said || "no output"}; see ${spec.runDir}`,
      );
    }
    const handle: InstanceHandle = {
      id: spec.id,
      kind: "vm",
      pid,
      addresses,
      logFile: path.join(spec.runDir, CONSOLE_LOG),
      runDir: spec.runDir,
      startTime: stat.startTime,
      helpers: [{ pid: consoleLog.pid, startTime: consoleLog.startTime }],
    };
    saveHandle(handle);
    return handle;
  }

  waitReady(handle: InstanceHandle, timeoutMs: number): Promise<void> {
    return waitForReady(handle, timeoutMs, {
      noun: "VM",
      logName: "console",
      fix:
        `Lines from "qemu:" are QEMU's own (for KVM trouble set GCI_QEMU_ACCEL=tcg); the others are ` +
        `the guest's: fix the image so it boots and prints "${READY_MARKER}" once it serves.`,
      extraLog: () => [
        // A panic's reason is above its stack trace, out of the tail.
        ...tailLines(handle.logFile, 200)
          .filter((line) => line.includes("Kernel panic"))
          .slice(-1)
          .map((line) => `panic: ${line.replace(/^\[[ \d.]+\]\s*/, "")}`),
        ...tailLines(path.join(handle.runDir, QEMU_LOG), 4).map((line) => `qemu: ${line}`),
      ],
    });
  }

  isRunning(handle: InstanceHandle): boolean {
    return isSameProcess(handle.pid, handle.startTime);
  }

  /** QMP "quit" (nothing to flush: the guest's disk writes are thrown away), then SIGTERM, then SIGKILL. */
  async stop(handle: InstanceHandle, graceMs: number = DEFAULT_GRACE_MS): Promise<void> {
    if (this.isRunning(handle)) {
      const deadline = Date.now() + graceMs;
      await qmpQuit(path.join(handle.runDir, QMP_SOCKET), Math.min(graceMs, 3000)).catch(() => undefined);
      if (!(await waitGone(handle, Math.max(0, deadline - Date.now())))) {
        if (this.isRunning(handle)) signalProcess(handle.pid, "SIGTERM");
        if (!(await waitGone(handle, 2000))) {
          if (this.isRunning(handle)) signalProcess(handle.pid, "SIGKILL");
          if (!(await waitGone(handle, 5000))) {
            throw new GciError(
              "INTERNAL",
              `VM "${handle.id}" (QEMU pid ${handle.pid}) still runs after SIGKILL; look at ` +
                `/proc/${handle.pid}/status (a process stuck in the kernel) and try stop again`,
            );
          }
        }
      }
    }
    await endHelpers(handle.helpers ?? [], 5000);
    for (const file of [QMP_SOCKET, PID_FILE, DISK_OVERLAY]) {
      fs.rmSync(path.join(handle.runDir, file), { force: true });
    }
    releaseQemuUid(handle.runDir);
  }
}

/**
 * What every QEMU the driver starts (guests and the KVM probe) runs under: a seccomp filter,
 * and, when the driver is root, `uid` (and the same gid, no other group) instead of root. QEMU
 * drops root at the end of its set-up, after it has opened every file it is given (kernel,
 * disks, console, pid file, QMP socket), so those stay root's and need no other owner.
 */
function confinement(uid: number | undefined): string[] {
  return [
    ...["-sandbox", "on,obsolete=deny,spawn=deny,resourcecontrol=deny"],
    // QEMU 7.2 takes "uid:gid" as well as a user name, and then sets exactly that one group.
    ...(uid === undefined ? [] : ["-runas", `${uid}:${uid}`]),
  ];
}

/** The uid of its own the QEMU of `runDir` runs as (see uid.ts); none when the driver is not root. */
function claimQemuUid(runDir: string): number | undefined {
  return process.getuid?.() === 0 ? claimUid(runDir) : undefined;
}

/** Gives back the uid `runDir` holds, if any (claiming again finds the held one: claims are per run dir). */
function releaseQemuUid(runDir: string): void {
  if (process.getuid?.() === 0) releaseUid(claimUid(runDir), runDir);
}

/** The accelerator the driver uses, and why. */
export interface AcceleratorChoice {
  readonly accel: QemuAccelerator;
  readonly reason: string;
}

function acceleratorFromEnv(): QemuAccelerator | "auto" {
  const value = process.env.GCI_QEMU_ACCEL;
  if (value === undefined || value === "" || value === "auto") return "auto";
  if (value === "kvm" || value === "tcg") return value;
  throw invalid(`GCI_QEMU_ACCEL="${value}" is not an accelerator: set it to kvm, tcg or auto, or unset it`);
}

/** Probes run at most once per QEMU binary in a process (and once per boot, through the cache file). */
const probes = new Map<string, Promise<AcceleratorChoice>>();
/** A kernel under working KVM reaches its "no root" panic in about a second; TCG takes ~4 s. */
const PROBE_TIMEOUT_MS = 8000;

/**
 * Decides between KVM and TCG. "auto" boots `kernel` under KVM with no initramfs, which must
 * reach its "cannot mount root" panic and exit (-no-reboot) in time: a /dev/kvm that opens is
 * not enough (on some hosts KVM guests hang, or "-cpu max" aborts). Anything else means TCG.
 */
export function chooseAccelerator(
  qemu: string,
  kernel: string,
  wanted: QemuAccelerator | "auto",
): Promise<AcceleratorChoice> {
  if (wanted !== "auto") return Promise.resolve({ accel: wanted, reason: "asked for" });
  let probe = probes.get(qemu);
  if (probe === undefined) {
    probe = probeKvm(qemu, kernel);
    probes.set(qemu, probe);
    // A probe that failed (not one that chose TCG) is tried again by the next boot; its caller
    // gets the error.
    probe.catch(() => probes.delete(qemu));
  }
  return probe;
}

interface ProbeRecord extends AcceleratorChoice {
  readonly bootId: string;
  readonly qemu: string;
  readonly qemuMtimeMs: number;
}

async function probeKvm(qemu: string, kernel: string): Promise<AcceleratorChoice> {
  try {
    fs.closeSync(fs.openSync("/dev/kvm", "r+"));
  } catch (e) {
    return { accel: "tcg", reason: `/dev/kvm cannot be opened (${(e as NodeJS.ErrnoException).code})` };
  }
  // The answer holds until the host reboots or QEMU changes; probing costs seconds when KVM hangs.
  const cacheFile = path.join(cacheRoot(), "qemu-accel.json");
  const key: ProbeKey = {
    bootId: readText("/proc/sys/kernel/random/boot_id").trim(),
    qemu,
    qemuMtimeMs: fs.statSync(qemu).mtimeMs,
  };
  const cached = readProbeRecord(cacheFile, key);
  if (cached !== undefined) return cached;
  // One probe at a time per cache: cluster managers that start together (gci world up) would
  // each boot a kernel under KVM, a core apiece for seconds when KVM hangs. Others wait for the
  // answer (bounded: a lock left by a daemon that died only delays them).
  const lock = `${cacheFile}.lock`;
  const locked = takeLock(lock);
  if (!locked) {
    const answer = await waitForProbeRecord(cacheFile, key, PROBE_TIMEOUT_MS + 4000);
    if (answer !== undefined) return answer;
  }
  try {
    const choice = await bootUnderKvm(qemu, kernel);
    writeProbeRecord(cacheFile, { ...key, ...choice });
    return choice;
  } finally {
    if (locked) fs.rmSync(lock, { force: true });
  }
}

type ProbeKey = Pick<ProbeRecord, "bootId" | "qemu" | "qemuMtimeMs">;

/** The answer kept in `cacheFile` for this boot and QEMU, if there is one. */
function readProbeRecord(cacheFile: string, key: ProbeKey): AcceleratorChoice | undefined {
  try {
    const cached = JSON.parse(fs.readFileSync(cacheFile, "utf8")) as ProbeRecord;
    if (
      cached.bootId === key.bootId &&
      cached.qemu === key.qemu &&
      cached.qemuMtimeMs === key.qemuMtimeMs &&
      (cached.accel === "kvm" || cached.accel === "tcg")
    ) {
      return { accel: cached.accel, reason: `${cached.reason} (probed earlier this boot)` };
    }
  } catch {
    // No usable record: probe.
  }
  return undefined;
}

function writeProbeRecord(cacheFile: string, record: ProbeRecord): void {
  try {
    fs.mkdirSync(path.dirname(cacheFile), { recursive: true });
    fs.writeFileSync(`${cacheFile}.${process.pid}`, JSON.stringify(record) + "\n");
    fs.renameSync(`${cacheFile}.${process.pid}`, cacheFile);
  } catch {
    // A cache that cannot be written only costs a probe next time.
  }
}

async function waitForProbeRecord(
  cacheFile: string,
  key: ProbeKey,
  timeoutMs: number,
): Promise<AcceleratorChoice | undefined> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    const answer = readProbeRecord(cacheFile, key);
    if (answer !== undefined) return answer;
  }
  return undefined;
}

/**
 * Creates `lock` if no one holds it; true when this process now does. A lock older than a
 * probe can last was left by a process that died: it is taken over. A folder where no lock can
 * be made (not writable) counts as taken by us: the probe then runs, uncoordinated.
 */
function takeLock(lock: string): boolean {
  try {
    fs.mkdirSync(path.dirname(lock), { recursive: true });
    const held = fs.statSync(lock, { throwIfNoEntry: false });
    if (held !== undefined && Date.now() - held.mtimeMs > 2 * PROBE_TIMEOUT_MS)
      fs.rmSync(lock, { force: true });
    fs.writeFileSync(lock, String(process.pid), { flag: "wx" });
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== "EEXIST";
  }
}

async function bootUnderKvm(qemu: string, kernel: string): Promise<AcceleratorChoice> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gci-kvm-probe-"));
  const consoleFile = path.join(dir, "console.log");
  try {
    const args = [
      ...["-accel", "kvm", "-cpu", "max", "-m", "128", "-smp", "1"],
      ...["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"],
      ...["-kernel", kernel, "-append", "console=ttyS0 panic=-1 loglevel=4"],
      ...["-serial", `file:${qemuValue(consoleFile)}`],
      ...confinement(claimQemuUid(dir)),
    ];
    const exit = await runBounded(qemu, args, PROBE_TIMEOUT_MS);
    const booted = /Kernel panic|VFS: /.test(readText(consoleFile));
    if (exit.code === 0 && booted) return { accel: "kvm", reason: "a kernel booted under KVM" };
    const why =
      exit.error !== undefined
        ? exit.error.message
        : exit.timedOut
          ? `a kernel under KVM did not finish booting within ${PROBE_TIMEOUT_MS / 1000} s`
          : `QEMU with KVM ended with ${exit.signal ?? `code ${exit.code}`}: ${lastLine(exit.stderr)}`;
    return { accel: "tcg", reason: why };
  } finally {
    releaseQemuUid(dir);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

interface BoundedExit {
  readonly code: number | null;
  readonly signal: string | null;
  readonly timedOut: boolean;
  readonly stderr: string;
  readonly error?: Error;
}

/** coreutils timeout's status when it had to SIGKILL the command (128 + 9). */
const KILLED_BY_TIMEOUT = 137;

/**
 * Runs `command` under coreutils `timeout -s KILL`, so that it ends in `timeoutMs` even when
 * this process dies first (a probe starts with the daemon, which may be killed right away; a
 * QEMU stuck in KVM would spin on a core for good).
 */
async function runBounded(command: string, args: string[], timeoutMs: number): Promise<BoundedExit> {
  const timeout = findOnPath("timeout") ?? "/usr/bin/timeout";
  const child = spawn(timeout, ["-s", "KILL", `${timeoutMs / 1000}s`, command, ...args], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => {
    if (stderr.length < 4096) stderr += chunk.toString("utf8");
  });
  return new Promise((resolve) => {
    // timeout passes a SIGTERM on to the command: the last word, should timeout itself hang.
    const timer = setTimeout(() => child.kill("SIGTERM"), timeoutMs + 2000);
    child.once("error", (error) => {
      clearTimeout(timer);
      resolve({ code: null, signal: null, timedOut: false, stderr, error });
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, timedOut: code === KILLED_BY_TIMEOUT || signal !== null, stderr });
    });
  });
}

/**
 * Starts choosing the accelerator now, so that no user's first boot waits for the KVM probe
 * (seconds on a fresh host; the answer is then kept for the host's boot), and boots later
 * share it. The probe boots the newest kernel in /boot. Undefined when there is nothing to
 * probe: GCI_QEMU_ACCEL set, no QEMU, or no kernel there (a first boot then probes with its
 * image's kernel). Throws INVALID_ARGUMENT for a GCI_QEMU_ACCEL that is not an accelerator.
 */
export function probeAcceleratorNow(qemu: string = QEMU_BINARY): Promise<AcceleratorChoice> | undefined {
  if (acceleratorFromEnv() !== "auto") return undefined;
  const binary = qemu.includes("/") ? qemu : findOnPath(qemu);
  const kernel = newestHostKernel();
  if (binary === undefined || kernel === undefined) return undefined;
  return chooseAccelerator(binary, kernel, "auto");
}

/** /boot/vmlinuz-<version> with the highest version that root can read, if any. */
function newestHostKernel(): string | undefined {
  let names: string[];
  try {
    names = fs.readdirSync("/boot");
  } catch {
    return undefined;
  }
  const kernels = names
    .filter((name) => name.startsWith("vmlinuz-"))
    .sort((a, b) => a.localeCompare(b, "en", { numeric: true }))
    .map((name) => path.join("/boot", name))
    .filter((file) => {
      try {
        fs.accessSync(file, fs.constants.R_OK);
        return true;
      } catch {
        return false;
      }
    });
  return kernels[kernels.length - 1];
}

function readText(file: string): string {
  try {
    return fs.readFileSync(file, "utf8");
  } catch {
    return "";
  }
}

function lastLine(text: string): string {
  const lines = text.split("\n").filter((l) => l.trim() !== "");
  return lines[lines.length - 1] ?? "no message";
}

/** The QEMU binary as a path; FAILED_PRECONDITION with the install command when it is missing. */
export function resolveQemu(qemu: string = QEMU_BINARY): string {
  const found = qemu.includes("/") ? (fs.existsSync(qemu) ? qemu : undefined) : findOnPath(qemu);
  if (found === undefined) {
    throw precondition(
      `${qemu} is not installed, and the qemu driver needs it to boot VMs: ` +
        `run apt-get install -y qemu-system-x86`,
    );
  }
  return found;
}

/** The image's part of the kernel command line: its env as KEY=value (init's environment), then cmdline. */
function imageCmdline(manifest: Manifest): string {
  const env = Object.entries(manifest.env ?? {})
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([key, value]) => `${key}=${value}`);
  return [...env, manifest.cmdline ?? ""].filter((part) => part !== "").join(" ");
}

/** A file of the extracted image, as an absolute path; FAILED_PRECONDITION when it is missing. */
function imageFile(spec: InstanceSpec, relative: string, what: string): string {
  const file = path.join(spec.imageDir, relative);
  try {
    fs.accessSync(file, fs.constants.R_OK);
  } catch {
    throw precondition(
      `the ${what} "${relative}" of image "${spec.manifest.name}" is missing from ${spec.imageDir}; ` +
        `extract the image there again (extractImage)`,
    );
  }
  return file;
}

/** QEMU option values escape a comma by doubling it. */
function qemuValue(value: string): string {
  return value.replace(/,/g, ",,");
}

/** The qemu-img binary, which makes a disk's throwaway layer; FAILED_PRECONDITION when missing. */
function resolveQemuImg(): string {
  const found = findOnPath("qemu-img");
  if (found === undefined) {
    throw precondition(
      `qemu-img is not installed, and the qemu driver needs it to attach an image's disk: ` +
        `run apt-get install -y qemu-utils`,
    );
  }
  return found;
}

/**
 * QEMU's arguments attaching `disk` as the guest's virtio disk. The stored disk is opened
 * read-only and, when qcow2, with `backing: null`: QEMU follows no file its header names, even
 * one the boot check missed (the check is the first line, this the second). Guest writes land
 * in a throwaway qcow2 layer in `runDir` (made empty here, removed when the VM stops), so they
 * never reach the stored image, as `snapshot=on` ensured before.
 * @internal
 */
export async function diskArgs(disk: string, runDir: string): Promise<string[]> {
  const format = diskFormat(disk);
  const overlay = path.join(runDir, DISK_OVERLAY);
  try {
    await execFileP(resolveQemuImg(), [
      "create",
      "-q",
      "-f",
      "qcow2",
      overlay,
      String(virtualSize(disk, format)),
    ]);
  } catch (e) {
    if (GciError.isInstance(e)) throw e;
    throw precondition(
      `qemu-img could not make the throwaway layer ${overlay} for disk ${disk}: ` +
        `${((e as { stderr?: string }).stderr ?? String(e)).trim()}; check that ${runDir} is writable`,
    );
  }
  const image = {
    driver: format,
    "node-name": "disk-image",
    "read-only": true,
    file: { driver: "file", filename: disk, "read-only": true },
    ...(format === "qcow2" ? { backing: null } : {}),
  };
  const layer = {
    driver: "qcow2",
    "node-name": "disk",
    file: { driver: "file", filename: overlay },
    backing: "disk-image",
  };
  return [
    ...["-blockdev", JSON.stringify(image), "-blockdev", JSON.stringify(layer)],
    ...["-device", "virtio-blk-pci,drive=disk"],
  ];
}

/** "qcow2" when the file starts with the qcow2 magic, else "raw". */
function diskFormat(file: string): "qcow2" | "raw" {
  return isQcow2(readHead(file, 4)) ? "qcow2" : "raw";
}

/** The size the guest sees: a qcow2 header's size field (bytes 24-31), or a raw file's length. */
function virtualSize(file: string, format: "qcow2" | "raw"): bigint {
  if (format === "raw") return BigInt(fs.statSync(file).size);
  const head = readHead(file, 32);
  if (head.length < 32) {
    throw invalid(`disk ${file} is a qcow2 image with a truncated header: pack the image with a whole disk`);
  }
  return head.readBigUInt64BE(24);
}

function readHead(file: string, bytes: number): Buffer {
  const head = Buffer.alloc(bytes);
  const fd = fs.openSync(file, "r");
  try {
    return head.subarray(0, fs.readSync(fd, head, 0, bytes, 0));
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Asks QEMU to quit through its QMP socket; resolves when QEMU closes the connection.
 * Socket paths longer than sun_path (108 bytes) are reached through /proc/self/fd.
 */
function qmpQuit(socketPath: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let dirFd: number | undefined;
    let target = socketPath;
    if (Buffer.byteLength(socketPath) >= 108) {
      dirFd = fs.openSync(path.dirname(socketPath), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
      target = `/proc/self/fd/${dirFd}/${path.basename(socketPath)}`;
    }
    const socket = net.createConnection(target);
    const done = (error?: Error): void => {
      clearTimeout(timer);
      socket.destroy();
      if (dirFd !== undefined) fs.closeSync(dirFd);
      dirFd = undefined;
      if (error) reject(error);
      else resolve();
    };
    const timer = setTimeout(() => done(new Error(`QMP quit timed out after ${timeoutMs} ms`)), timeoutMs);
    let buffered = "";
    let step: "greeting" | "capabilities" | "quit" = "greeting";
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      buffered += chunk;
      let newline: number;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        if (line === "") continue;
        let message: { QMP?: unknown; return?: unknown; error?: { desc?: string } };
        try {
          message = JSON.parse(line) as typeof message;
        } catch {
          done(new Error(`QMP sent a line that is not JSON: ${line.slice(0, 200)}`));
          return;
        }
        if (message.error !== undefined) {
          done(new Error(`QMP refused ${step}: ${message.error.desc ?? line}`));
          return;
        }
        if (step === "greeting" && message.QMP !== undefined) {
          step = "capabilities";
          socket.write(JSON.stringify({ execute: "qmp_capabilities" }) + "\n");
        } else if (step === "capabilities" && message.return !== undefined) {
          step = "quit";
          socket.write(JSON.stringify({ execute: "quit" }) + "\n");
        }
      }
    });
    socket.on("error", (e) => done(e));
    socket.on("close", () => (step === "quit" ? done() : done(new Error("QMP closed before quit"))));
  });
}
