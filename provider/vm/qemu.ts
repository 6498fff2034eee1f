/**
 * The qemu driver: each instance is a QEMU guest booted from the image's kernel and initramfs,
 * with user-mode networking and its ports forwarded to 127.0.0.1. QEMU runs detached (its own
 * process group, stdio to files), so VMs outlive the cluster manager that started them.
 */

import { spawn } from "child_process";
import * as fs from "fs";
import * as net from "net";
import * as os from "os";
import * as path from "path";
import type { Manifest } from "../image";
import { GciError, invalid, precondition } from "../errors";
import { loadHandle, saveHandle } from "./handle";
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
const CONSOLE_LOG = "console.log";
const QEMU_LOG = "qemu.log";
const QMP_SOCKET = "qmp.sock";
const PID_FILE = "qemu.pid";

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
    const qemu = resolveQemu(this.qemu);
    const accel = await chooseAccelerator(qemu, kernel, this.accel);

    fs.mkdirSync(spec.runDir, { recursive: true });
    for (const stale of [QMP_SOCKET, PID_FILE]) fs.rmSync(path.join(spec.runDir, stale), { force: true });

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
      ...(disk === undefined
        ? []
        : ["-drive", `file=${qemuValue(disk)},if=virtio,format=${diskFormat(disk)},snapshot=on`]),
      // The console goes to QEMU's stdout, which the log writer caps and rotates (startLogCapper).
      ...["-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console"],
      ...["-qmp", `unix:${QMP_SOCKET},server=on,wait=off`, "-pidfile", PID_FILE],
      ...["-nic", ["user", "model=virtio-net-pci", ...forwards].join(",")],
      // A guest that breaks out of the emulator meets a seccomp filter, and no root.
      ...["-sandbox", "on,obsolete=deny,spawn=deny,resourcecontrol=deny"],
      ...(process.getuid?.() === 0 ? ["-runas", "nobody"] : []),
    ];

    const log = fs.openSync(path.join(spec.runDir, QEMU_LOG), "w");
    const consoleLog = await startLogCapper(path.join(spec.runDir, CONSOLE_LOG));
    let pid: number;
    try {
      pid = await spawnDetached(qemu, args, spec.runDir, { stdout: consoleLog.input, stderr: log });
    } finally {
      fs.closeSync(log);
      // QEMU holds the console's input now; the log writer ends after it.
      consoleLog.input.destroy();
    }
    const stat = procStat(pid);
    if (stat === undefined) {
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

  /** QMP "quit" (the guest has nothing to flush: its disk is a snapshot), then SIGTERM, then SIGKILL. */
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
    for (const file of [QMP_SOCKET, PID_FILE]) fs.rmSync(path.join(handle.runDir, file), { force: true });
  }
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
  const cacheFile = path.join(
    process.env.GCI_CACHE || path.join(os.homedir(), ".cache", "gci"),
    "qemu-accel.json",
  );
  const key = {
    bootId: readText("/proc/sys/kernel/random/boot_id").trim(),
    qemu,
    qemuMtimeMs: fs.statSync(qemu).mtimeMs,
  };
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
  const choice = await bootUnderKvm(qemu, kernel);
  try {
    fs.mkdirSync(path.dirname(cacheFile), { recursive: true });
    const record: ProbeRecord = { ...key, ...choice };
    fs.writeFileSync(`${cacheFile}.${process.pid}`, JSON.stringify(record) + "\n");
    fs.renameSync(`${cacheFile}.${process.pid}`, cacheFile);
  } catch {
    // A cache that cannot be written only costs a probe next time.
  }
  return choice;
}

async function bootUnderKvm(qemu: string, kernel: string): Promise<AcceleratorChoice> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gci-kvm-probe-"));
  const consoleFile = path.join(dir, "console.log");
  try {
    const child = spawn(
      qemu,
      [
        ...["-accel", "kvm", "-cpu", "max", "-m", "128", "-smp", "1"],
        ...["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"],
        ...["-kernel", kernel, "-append", "console=ttyS0 panic=-1 loglevel=4"],
        ...["-serial", `file:${qemuValue(consoleFile)}`],
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      if (stderr.length < 4096) stderr += chunk.toString("utf8");
    });
    const exit = await new Promise<{ code: number | null; signal: string | null; error?: Error }>(
      (resolve) => {
        const timer = setTimeout(() => child.kill("SIGKILL"), PROBE_TIMEOUT_MS);
        child.once("error", (error) => {
          clearTimeout(timer);
          resolve({ code: null, signal: null, error });
        });
        child.once("exit", (code, signal) => {
          clearTimeout(timer);
          resolve({ code, signal });
        });
      },
    );
    const booted = /Kernel panic|VFS: /.test(readText(consoleFile));
    if (exit.code === 0 && booted) return { accel: "kvm", reason: "a kernel booted under KVM" };
    const why =
      exit.error !== undefined
        ? exit.error.message
        : exit.signal === "SIGKILL"
          ? `a kernel under KVM did not finish booting within ${PROBE_TIMEOUT_MS / 1000} s`
          : `QEMU with KVM ended with ${exit.signal ?? `code ${exit.code}`}: ${lastLine(stderr)}`;
    return { accel: "tcg", reason: why };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
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

/** "qcow2" when the file starts with the qcow2 magic, else "raw". */
function diskFormat(file: string): string {
  const magic = Buffer.alloc(4);
  const fd = fs.openSync(file, "r");
  try {
    fs.readSync(fd, magic, 0, 4, 0);
  } finally {
    fs.closeSync(fd);
  }
  return magic.equals(Buffer.from([0x51, 0x46, 0x49, 0xfb])) ? "qcow2" : "raw";
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
