/**
 * VM drivers: QEMU guests ("qemu") and sandboxed process instances ("process"), behind one
 * InstanceDriver interface; machine sizes; instance handles on disk.
 */

import type { Manifest } from "../../image";
import { ProcessDriver } from "./process";
import { QemuDriver, resolveQemu } from "./qemu";
import type { InstanceDriver, InstanceKind } from "./types";

export type { InstanceDriver, InstanceHandle, InstanceKind, InstanceSpec } from "./types";
export { MACHINE_SIZES, machineSize } from "../../common/sizes";
export type { MachineSize } from "../../common/sizes";
export { QEMU_BINARY, QemuDriver, chooseAccelerator } from "./qemu";
export type { AcceleratorChoice, QemuAccelerator, QemuDriverArgs } from "./qemu";
export { ProcessDriver } from "./process";
export type { ProcessDriverArgs } from "./process";
export { HANDLE_FILE, loadHandle, LOG_FILE, logPath, saveHandle } from "./handle";
export { READY_MARKER, freePort } from "./host";

/** The driver that runs instances of a kind (for instances found again by their handle). */
export function driverForKind(kind: InstanceKind): InstanceDriver {
  return kind === "vm" ? new QemuDriver({ qemu: resolveQemu() }) : new ProcessDriver();
}

/**
 * The driver for an image: qemu for driver "qemu" (FAILED_PRECONDITION naming the package when
 * QEMU is not installed), process for driver "process".
 */
export function driverFor(manifest: Manifest): InstanceDriver {
  switch (manifest.driver) {
    case "qemu":
      return new QemuDriver({ qemu: resolveQemu() });
    case "process":
      return new ProcessDriver();
  }
}
