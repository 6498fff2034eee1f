/**
 * The process driver's sandbox: the host tools it needs, the shell script that builds an
 * instance's root as PID 1 of its own namespaces, and the command line that runs it (cgroups
 * joined first, the entrypoint last under `env -i`). See process.ts for the whole model.
 */

import * as fs from "fs";
import * as path from "path";
import { precondition } from "../../common/errors";
import type { InstanceCgroups } from "./cgroup";
import { findOnPath } from "./host";
import type { InstanceSpec } from "./types";
import { UID_BASE } from "./uid";

/** PATH of the entrypoint unless the image sets one. */
const STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/** Where the static busybox is mounted in the instance's root; an image may not have this path. */
const SANDBOX_DIR = ".gci";
/**
 * The uid (and gid) of the port forwarders: no instance's (an instance could trace its own
 * forwarder, which runs outside its root) and not nobody's (QEMU and others run as nobody on the
 * host); just below the instances' range. Forwarders of different instances never see one
 * another: each lives in its instance's pid namespace.
 */
const FORWARDER_USER = String(UID_BASE - 1);

/**
 * Runs as PID 1 of the new pid namespace, still in the host's root, in the static busybox's sh
 * (its mount, mknod, mkdir, ... are applets: no exec each, which keeps starts cheap): builds the
 * instance's root and starts the entrypoint in it. It stays as the namespace's init, so that SIGTERM reaches the
 * entrypoint (a PID 1 without a handler would ignore it) and its end ends everything in there.
 * Arguments: image rootfs scratch sizeMiB uid busybox unshare setpriv proxyd "hostPort...", then
 * `env -i NAME=VALUE... /program args`, which the static busybox runs in the instance's root as
 * uid (gid the same, no other groups). Each port is forwarded from the host's 127.0.0.1 to the
 * same port on the instance's loopback: the cluster manager made the listening socket (fd 3 for
 * the first port, 4 for the next, ...) in the host's network namespace; systemd-socket-proxyd,
 * started here as FORWARDER_USER, accepts on it and connects from the instance's network namespace.
 * It runs in this pid namespace, so it ends with the instance.
 * The init reaps only the entrypoint: orphans of the entrypoint stay zombies until the instance ends.
 */
const SANDBOX_SCRIPT = `
set -e
child="" stopping=""
trap 'stopping=1; [ -z "$child" ] || kill -TERM "$child" 2>/dev/null' TERM INT
image=$1 rootfs=$2 scratch=$3 size=$4 uid=$5 busybox=$6 unshare=$7 setpriv=$8 proxyd=$9 ports=\${10}
shift 10
mount -t tmpfs -o "mode=0755,size=\${size}m" gci-scratch "$scratch"
mkdir "$scratch/upper" "$scratch/work"
mount -t overlay -o "nosuid,nodev,lowerdir=$image,upperdir=$scratch/upper,workdir=$scratch/work" gci-root "$rootfs"
for dir in dev proc tmp; do
  if [ -L "$rootfs/$dir" ] || { [ -e "$rootfs/$dir" ] && [ ! -d "$rootfs/$dir" ]; }; then
    echo "gci: the image's /$dir is not a directory; the process driver mounts its own /$dir there" >&2
    exit 70
  fi
done
if [ -e "$rootfs/${SANDBOX_DIR}" ] || [ -L "$rootfs/${SANDBOX_DIR}" ]; then
  echo "gci: the image has a /${SANDBOX_DIR}, where the process driver mounts its own tools; remove it from the image" >&2
  exit 70
fi
mkdir -p "$rootfs/dev" "$rootfs/proc" "$rootfs/tmp" "$rootfs/${SANDBOX_DIR}"
mount -t tmpfs -o mode=0755,size=64k,nosuid,noexec gci-dev "$rootfs/dev"
mknod -m 666 "$rootfs/dev/null" c 1 3
mknod -m 666 "$rootfs/dev/zero" c 1 5
mknod -m 666 "$rootfs/dev/random" c 1 8
mknod -m 666 "$rootfs/dev/urandom" c 1 9
mount -t proc -o nosuid,nodev,noexec gci-proc "$rootfs/proc"
chmod 1777 "$rootfs/tmp"
: >"$rootfs/${SANDBOX_DIR}/busybox"
mount --bind "$busybox" "$rootfs/${SANDBOX_DIR}/busybox"
mount -o remount,bind,ro,nosuid,nodev "$rootfs/${SANDBOX_DIR}/busybox"
ip link set lo up
set +e
# The entrypoint gets none of the listening sockets (fds 3, 4, ...); each forwarder gets its own as fd 3.
closes="" fd=3
for port in $ports; do closes="$closes $fd<&-"; fd=$((fd + 1)); done
eval '"$unshare" --root="$rootfs" --wd=/ --setgid="$uid" --setuid="$uid" -- "/${SANDBOX_DIR}/busybox" "$@" </dev/null '"$closes"' &'
child=$!
fd=3
for port in $ports; do
  sh -c 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"' gci-forward \\
    "$setpriv" --reuid=${FORWARDER_USER} --regid=${FORWARDER_USER} --clear-groups --no-new-privs -- \\
    "$proxyd" "127.0.0.1:$port" </dev/null 3<&"$fd" &
  fd=$((fd + 1))
done
[ -z "$stopping" ] || kill -TERM "$child" 2>/dev/null
while :; do
  wait "$child"
  status=$?
  kill -0 "$child" 2>/dev/null || exit "$status"
done
`;

/** Moves this shell into the cgroups named by its arguments ("<n> <procs file>..."), then execs the rest. */
const JOIN_CGROUPS = `
n=$1; shift
while [ "$n" -gt 0 ]; do echo $$ > "$1"; shift; n=$((n - 1)); done
exec "$@"
`;

/** The command line of the sandbox: join the cgroups, unshare, then SANDBOX_SCRIPT with its arguments. */
export function sandboxArgs(
  spec: InstanceSpec,
  tools: HostTools,
  uid: number,
  ports: Record<string, number>,
  cgroups: InstanceCgroups | undefined,
): string[] {
  const procs = cgroups?.procs ?? [];
  return [
    ...["-c", JOIN_CGROUPS, "gci-cgroups", String(procs.length), ...procs],
    ...[tools.unshare, "--mount", "--pid", "--ipc", "--net", "--fork", "--kill-child"],
    ...[tools.busybox, "sh", "-c", SANDBOX_SCRIPT, "gci-sandbox"],
    ...[spec.imageDir, path.join(spec.runDir, "rootfs"), path.join(spec.runDir, "scratch")],
    ...[String(spec.memoryMiB), String(uid), tools.busybox, tools.unshare, tools.setpriv, tools.socketProxyd],
    ...[Object.values(ports).join(" ")],
    ...entrypointCommand(spec, ports),
  ];
}

/**
 * `env -i NAME=VALUE... /program args` for the static busybox in the instance's root: the
 * entrypoint's whole environment (HOME, the image's env, PATH, then the driver's GCI_* and
 * PORT_*, which the image cannot override), after the change of uid.
 */
function entrypointCommand(spec: InstanceSpec, ports: Record<string, number>): string[] {
  const imageEnv = spec.manifest.env ?? {};
  const env: Record<string, string> = {
    HOME: "/",
    ...imageEnv,
    PATH: imageEnv.PATH ?? STANDARD_PATH,
    GCI_ID: spec.id,
    GCI_DC: spec.datacenter,
    GCI_DIGEST: spec.digest,
  };
  for (const [guestPort, hostPort] of Object.entries(ports)) env[`PORT_${guestPort}`] = String(hostPort);
  const [program, ...programArgs] = spec.manifest.entrypoint!;
  return ["env", "-i", ...Object.entries(env).map(([k, v]) => `${k}=${v}`), `/${program}`, ...programArgs];
}

/** A listening socket on the host's 127.0.0.1 at a port the kernel picks, with its file descriptor. */

export interface HostTools {
  readonly unshare: string;
  readonly setpriv: string;
  readonly sh: string;
  /** A static busybox (no dynamic loader reads LD_* in it), mounted into each instance's root. */
  readonly busybox: string;
  readonly socketProxyd: string;
}

let tools: HostTools | undefined;

/** The host tools the sandbox needs; FAILED_PRECONDITION with the fix when one is missing or not root. */
export function hostTools(): HostTools {
  if (tools !== undefined) return tools;
  if (process.getuid?.() !== 0) {
    throw precondition(
      `the process driver needs root to create mount, pid and network namespaces (uid is ${process.getuid?.()}); ` +
        `run the cluster manager as root, or use the qemu driver`,
    );
  }
  const find = (name: string, pkg: string, dirs: string[] = []): string => {
    const found =
      findOnPath(name) ??
      [...dirs, "/usr/bin", "/usr/sbin", "/bin"].map((dir) => `${dir}/${name}`).find(fs.existsSync);
    if (found === undefined) {
      throw precondition(
        `${name} is not installed, and the process driver needs it: run apt-get install -y ${pkg}`,
      );
    }
    return found;
  };
  const busybox = find("busybox", "busybox-static");
  if (isDynamic(busybox)) {
    throw precondition(
      `${busybox} is linked dynamically; the process driver runs it inside images, which lack its ` +
        `libraries: run apt-get install -y busybox-static`,
    );
  }
  tools = {
    unshare: find("unshare", "util-linux"),
    setpriv: find("setpriv", "util-linux"),
    sh: find("sh", "dash"),
    busybox,
    socketProxyd: find("systemd-socket-proxyd", "systemd", ["/lib/systemd", "/usr/lib/systemd"]),
  };
  return tools;
}

/** True when the ELF file names a program interpreter (PT_INTERP): it needs the dynamic loader. */
function isDynamic(file: string): boolean {
  const elf = fs.readFileSync(file);
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2) return true;
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const offset = phoff + i * phentsize;
    if (offset + 4 > elf.length) return true;
    if (elf.readUInt32LE(offset) === 3) return true;
  }
  return false;
}
