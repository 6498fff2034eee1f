/**
 * Choosing QEMU's accelerator: KVM only when a probe boots a kernel under it, else TCG; the
 * probe's answer is kept per host boot and QEMU binary, and one probe runs at a time.
 */

import { spawn } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { cacheRoot } from "../../common/paths";
import { invalid } from "../../common/errors";
import { findOnPath } from "./host";
import {
  claimQemuUid,
  confinement,
  QEMU_BINARY,
  QemuAccelerator,
  qemuValue,
  releaseQemuUid,
} from "./qemu-args";

/** The accelerator the driver uses, and why. */
export interface AcceleratorChoice {
  readonly accel: QemuAccelerator;
  readonly reason: string;
}

export function acceleratorFromEnv(): QemuAccelerator | "auto" {
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
