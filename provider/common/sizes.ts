import { invalid } from "./errors";

/** A machine size: vCPUs and memory per instance. */
export interface MachineSize {
  readonly vcpus: number;
  readonly memoryMiB: number;
}

/** The named machine sizes a StartVms may ask for. */
export const MACHINE_SIZES: Readonly<Record<string, MachineSize>> = {
  nano: { vcpus: 1, memoryMiB: 128 },
  micro: { vcpus: 1, memoryMiB: 256 },
  small: { vcpus: 1, memoryMiB: 512 },
  medium: { vcpus: 2, memoryMiB: 1024 },
  large: { vcpus: 4, memoryMiB: 2048 },
};

/** The size called `name`, or INVALID_ARGUMENT listing the sizes there are. */
export function machineSize(name: string): MachineSize {
  const size = MACHINE_SIZES[name];
  if (!size) {
    const known = Object.entries(MACHINE_SIZES)
      .map(([n, s]) => `${n} (${s.vcpus} vCPU, ${s.memoryMiB} MiB)`)
      .join(", ");
    throw invalid(`machine size "${name}" is unknown: use one of ${known}`);
  }
  return size;
}

/** The most VMs one group (one start request) may have: checked by the provider and the cluster manager. */
export const MAX_COUNT = 1000;
