/**
 * QEMU command-line pieces shared by guests and the KVM probe: the confinement every QEMU runs
 * under (seccomp, its own uid), value escaping, and the image's part of the kernel command line.
 */

import type { Manifest } from "../../image";
import { claimUid, releaseUid } from "./uid";

/** How QEMU executes the guest: hardware virtualization ("kvm") or software emulation ("tcg"). */
export type QemuAccelerator = "kvm" | "tcg";

/** The QEMU binary the driver runs unless told otherwise. */
export const QEMU_BINARY = "qemu-system-x86_64";

/**
 * What every QEMU the driver starts (guests and the KVM probe) runs under: a seccomp filter,
 * and, when the driver is root, `uid` (and the same gid, no other group) instead of root. QEMU
 * drops root at the end of its set-up, after it has opened every file it is given (kernel,
 * disks, console, pid file, QMP socket), so those stay root's and need no other owner.
 */
export function confinement(uid: number | undefined): string[] {
  return [
    ...["-sandbox", "on,obsolete=deny,spawn=deny,resourcecontrol=deny"],
    // QEMU 7.2 takes "uid:gid" as well as a user name, and then sets exactly that one group.
    ...(uid === undefined ? [] : ["-runas", `${uid}:${uid}`]),
  ];
}

/** The uid of its own the QEMU of `runDir` runs as (see uid.ts); none when the driver is not root. */
export function claimQemuUid(runDir: string): number | undefined {
  return process.getuid?.() === 0 ? claimUid(runDir) : undefined;
}

/** Gives back the uid `runDir` holds, if any (claiming again finds the held one: claims are per run dir). */
export function releaseQemuUid(runDir: string): void {
  if (process.getuid?.() === 0) releaseUid(claimUid(runDir), runDir);
}

/** The image's part of the kernel command line: its env as KEY=value (init's environment), then cmdline. */
export function imageCmdline(manifest: Manifest): string {
  const env = Object.entries(manifest.env ?? {})
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([key, value]) => `${key}=${value}`);
  return [...env, manifest.cmdline ?? ""].filter((part) => part !== "").join(" ");
}

/** QEMU option values escape a comma by doubling it. */
export function qemuValue(value: string): string {
  return value.replace(/,/g, ",,");
}
