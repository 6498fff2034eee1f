/**
 * The qemu driver: each instance is a QEMU guest booted from the image's kernel and initramfs,
 * with user-mode networking and its ports forwarded to 127.0.0.1. QEMU runs detached (its own
 * process group, stdio to files), so VMs outlive the cluster manager that started them.
 */

import * as fs from "fs";
import * as path from "path";
import type { Manifest } from "../../image";
import { checkDiskFile } from "../../image/qcow2";
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
import { acceleratorFromEnv, AcceleratorChoice, chooseAccelerator } from "./qemu-accel";
import {
  claimQemuUid,
  confinement,
  imageCmdline,
  QEMU_BINARY,
  QemuAccelerator,
  qemuValue,
  releaseQemuUid,
} from "./qemu-args";
import { DISK_OVERLAY, diskArgs } from "./qemu-disk";
import { qmpQuit } from "./qemu-qmp";
import type { InstanceDriver, InstanceHandle, InstanceSpec } from "./types";

// The driver's parts live beside it; these stay importable from here (index.ts, server.ts, tests).
export { chooseAccelerator, probeAcceleratorNow } from "./qemu-accel";
export type { AcceleratorChoice } from "./qemu-accel";
export { QEMU_BINARY } from "./qemu-args";
export type { QemuAccelerator } from "./qemu-args";
export { diskArgs } from "./qemu-disk";

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

/** Files in an instance's run directory (QEMU runs with it as its working directory). */
const CONSOLE_LOG = LOG_FILE.vm;
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
    // Before QEMU opens anything: it would follow a backing file as root.
    if (disk !== undefined) checkDiskFile(`"${manifest.disk}" of image "${manifest.name}"`, disk);
    const qemu = resolveQemu(this.qemu);
    const accel = await chooseAccelerator(qemu, kernel, this.accel);

    fs.mkdirSync(spec.runDir, { recursive: true });
    for (const stale of [QMP_SOCKET, PID_FILE, DISK_OVERLAY])
      fs.rmSync(path.join(spec.runDir, stale), { force: true });

    const { addresses, forwards } = await forwardPorts(manifest.ports ?? []);
    const args = await guestArgs(spec, { kernel, initrd, disk }, accel, forwards);
    return launch(spec, qemu, args, addresses);
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
      // A QEMU that does not take the quit (socket gone, too slow) is signalled below: the
      // escalation, not this call, decides the outcome.
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

/** A free 127.0.0.1 port for each guest port: the addresses to hand out, and QEMU's hostfwd rules. */
async function forwardPorts(
  ports: readonly number[],
): Promise<{ addresses: Record<string, string>; forwards: string[] }> {
  const addresses: Record<string, string> = {};
  const forwards: string[] = [];
  for (const guestPort of ports) {
    const hostPort = await freePort();
    addresses[String(guestPort)] = `127.0.0.1:${hostPort}`;
    forwards.push(`hostfwd=tcp:127.0.0.1:${hostPort}-:${guestPort}`);
  }
  return { addresses, forwards };
}

/** The image files a guest boots from (absolute paths, checked). */
interface BootFiles {
  readonly kernel: string;
  readonly initrd: string;
  readonly disk: string | undefined;
}

/** QEMU's whole command line for the guest of `spec` (claims its uid when the driver is root). */
async function guestArgs(
  spec: InstanceSpec,
  files: BootFiles,
  accel: AcceleratorChoice,
  forwards: string[],
): Promise<string[]> {
  const cmdline = [
    "console=ttyS0 quiet panic=-1",
    `gci.id=${spec.id} gci.dc=${spec.datacenter} gci.digest=${spec.digest}`,
    imageCmdline(spec.manifest),
  ]
    .filter((part) => part !== "")
    .join(" ");
  return [
    ...["-name", qemuValue(spec.id)],
    ...(accel.accel === "kvm" ? ["-accel", "kvm", "-cpu", "max"] : ["-accel", "tcg"]),
    ...["-m", String(spec.memoryMiB), "-smp", String(spec.vcpus)],
    ...["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"],
    ...["-kernel", files.kernel, "-initrd", files.initrd, "-append", cmdline],
    ...(files.disk === undefined ? [] : await diskArgs(files.disk, spec.runDir)),
    // The console goes to QEMU's stdout, which the log writer caps and rotates (startLogCapper).
    ...["-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console"],
    ...["-qmp", `unix:${QMP_SOCKET},server=on,wait=off`, "-pidfile", PID_FILE],
    // restrict=on: the guest reaches nothing but what is forwarded to it; without it,
    // 10.0.2.2 is the host's 127.0.0.1, where every cluster manager listens.
    ...["-nic", ["user", "model=virtio-net-pci", "restrict=on", ...forwards].join(",")],
    ...confinement(claimQemuUid(spec.runDir)),
  ];
}

/** Spawns QEMU detached with its console capped, and saves the handle of the guest it runs. */
async function launch(
  spec: InstanceSpec,
  qemu: string,
  args: string[],
  addresses: Record<string, string>,
): Promise<InstanceHandle> {
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
    throw precondition(`QEMU exited at once for VM "${spec.id}": ${said || "no output"}; see ${spec.runDir}`);
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
