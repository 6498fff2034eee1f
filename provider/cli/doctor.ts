import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { ENGINE_VERSION, engineBinDir, stateRoot } from "../engine/paths";

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
    checkLanguageHost(),
    checkLauncher(),
    checkBinary("QEMU", "qemu-system-x86_64", ["--version"], "apt-get install -y qemu-system-x86"),
    checkGuestKernel(),
    checkBinary("busybox", "busybox", ["--help"], "apt-get install -y busybox-static"),
    checkBinary("etcd", "etcd", ["--version"], "apt-get install -y etcd-server"),
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
 * The Node.js language host `pulumi up` launches: GCI's own (the Go host's module is not served
 * here), a shim next to the CLI that runs dist/provider/engine/language-host.js.
 */
function checkLanguageHost(): DoctorRow {
  const bin = path.join(engineBinDir(), "pulumi-language-nodejs");
  const ok = isExecutable(bin);
  return row(
    "language host",
    ok,
    ok ? `pulumi-language-nodejs at ${bin} (GCI's Node.js host)` : `not found at ${bin}`,
    SETUP,
  );
}

function checkLauncher(): DoctorRow {
  const bin = path.join(engineBinDir(), "pulumi-resource-pulumi-nodejs");
  const ok = isExecutable(bin);
  return row("launcher", ok, ok ? `pulumi-resource-pulumi-nodejs at ${bin}` : `not found at ${bin}`, SETUP);
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
