import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { ENGINE_VERSION, engineBinDir, packageRoot, stateRoot } from "../common/paths";
import { cgroupSupport } from "../cluster/vm/cgroup";

/** One requirement and whether this machine meets it. */
export interface DoctorRow {
  readonly name: string;
  readonly status: "ok" | "missing";
  /** What was found (version, path) or what is wrong. */
  readonly detail: string;
  /** The exact command or step that fixes a missing requirement; empty when ok. */
  readonly fix: string;
  /** Whether GCI cannot work without it (doctor exits 1 when a required row is missing). */
  readonly required: boolean;
}

const SETUP = "npm run setup";

/** Checks every requirement of GCI on this machine. */
export function runDoctor(): DoctorRow[] {
  return [
    checkNode(),
    checkPulumi(),
    checkPlugin("language host", "pulumi-language-nodejs", "runs Node.js programs"),
    checkPlugin("dynamic host", "pulumi-resource-pulumi-nodejs", "serves dynamic resources, import included"),
    checkBinary("QEMU", "qemu-system-x86_64", ["--version"], "apt-get install -y qemu-system-x86"),
    checkGuestKernel(),
    checkBinary("busybox", "busybox", ["--help"], "apt-get install -y busybox-static"),
    checkBinary("etcd", "etcd", ["--version"], "apt-get install -y etcd-server"),
    checkCgroups(),
    checkStateFolder(),
  ];
}

function row(name: string, ok: boolean, detail: string, fix: string, required = true): DoctorRow {
  return { name, status: ok ? "ok" : "missing", detail, fix: ok ? "" : fix, required };
}

function run(file: string, args: string[]): string | undefined {
  try {
    return execFileSync(file, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 10_000 })
      .split("\n")[0]
      .trim();
  } catch {
    return undefined;
  }
}

function checkNode(): DoctorRow {
  const major = Number(process.versions.node.split(".")[0]);
  return row("node", major >= 20, `v${process.versions.node}`, "install Node.js 20 or newer");
}

function checkPulumi(): DoctorRow {
  const bin = path.join(engineBinDir(), "pulumi");
  const version = run(bin, ["version"]);
  const ok = version === `v${ENGINE_VERSION}`;
  const detail = version ? `${version} at ${bin}` : `not found at ${bin}`;
  return row(
    "pulumi",
    ok,
    ok ? detail : `${detail} (want v${ENGINE_VERSION})`,
    `${SETUP}  (builds the CLI from its Go module)`,
  );
}

/**
 * The two Node.js plugins the CLI launches: GCI's shim (scripts/engine-shim) under the plugin's
 * name next to the CLI, running this package's language host or dynamic-provider host. A copy
 * that differs from this package's shim is stale (left by another version): set-up replaces it.
 */
function checkPlugin(name: string, plugin: string, what: string): DoctorRow {
  const bin = path.join(engineBinDir(), plugin);
  const shim = fs.readFileSync(path.join(packageRoot(), "scripts", "engine-shim"));
  const found = isExecutable(bin);
  const current = found && fs.readFileSync(bin).equals(shim);
  const detail = !found
    ? `not found at ${bin}`
    : current
      ? `${plugin} at ${bin} (${what})`
      : `${bin} is not this version's shim`;
  return row(name, current, detail, SETUP);
}

/** CPU and memory limits of process instances (not required: without, they run unlimited). */
function checkCgroups(): DoctorRow {
  const found = cgroupSupport();
  const detail =
    found.version === 0
      ? `process instances run without CPU and memory limits: ${found.reason}`
      : found.version === 1
        ? `v1: ${found.cpu}, ${found.memory}`
        : `v2: ${found.root}`;
  return row(
    "cgroups",
    found.version !== 0,
    detail,
    "run the cluster managers as root on a host with the cpu and memory cgroup controllers",
    false,
  );
}

function checkBinary(name: string, file: string, args: string[], fix: string): DoctorRow {
  const found = pathLookup(file).find(isExecutable);
  const version = found ? run(found, args) : undefined;
  return row(
    name,
    found !== undefined,
    found ? `${version ?? ""} (${found})`.trim() : `${file} not on PATH`,
    fix,
  );
}

function checkGuestKernel(): DoctorRow {
  const kernels = fs.existsSync("/boot")
    ? fs.readdirSync("/boot").filter((f) => f.startsWith("vmlinuz-"))
    : [];
  const readable = kernels.map((k) => path.join("/boot", k)).filter((k) => canRead(k));
  return row(
    "guest kernel",
    readable.length > 0,
    readable.length > 0 ? readable.join(", ") : "no readable /boot/vmlinuz-*",
    "apt-get install -y linux-image-amd64",
  );
}

function checkStateFolder(): DoctorRow {
  const dir = stateRoot();
  let ok = true;
  try {
    fs.mkdirSync(dir, { recursive: true });
    fs.accessSync(dir, fs.constants.W_OK);
  } catch {
    ok = false;
  }
  return row(
    "state folder",
    ok,
    ok ? `${dir} (writable)` : `${dir} is not writable`,
    `set GCI_STATE to a writable folder`,
  );
}

function pathLookup(file: string): string[] {
  return (process.env.PATH ?? "")
    .split(path.delimiter)
    .filter(Boolean)
    .map((dir) => path.join(dir, file));
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function canRead(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.R_OK);
    return true;
  } catch {
    return false;
  }
}
