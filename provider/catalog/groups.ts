/**
 * The rules both catalog engines apply inside their VM-group transactions: whether a group
 * fits its datacenter beside the others, and when a stored group is the one a caller expects
 * (the compare of compare-and-swap). One home, so SQLite and etcd cannot drift apart.
 */

import { exhausted, invalid } from "../common/errors";
import type { DatacenterRecord, VmGroupRecord } from "./types";

/** vCPUs and memory the groups hold together. */
export function groupUsage(groups: readonly VmGroupRecord[]): { vcpus: number; memoryMiB: number } {
  return {
    vcpus: groups.reduce((sum, g) => sum + g.vcpus * g.count, 0),
    memoryMiB: groups.reduce((sum, g) => sum + g.memoryMiB * g.count, 0),
  };
}

/**
 * RESOURCE_EXHAUSTED, saying what is free, unless `group` fits into `dc` beside `groups`
 * (the datacenter's other groups; one with the same request id is the group's old self and
 * does not count).
 */
export function checkGroupFits(
  dc: DatacenterRecord,
  groups: readonly VmGroupRecord[],
  group: VmGroupRecord,
): void {
  const used = groupUsage(groups.filter((g) => g.requestId !== group.requestId));
  const freeVcpus = dc.capacity.vcpus - used.vcpus;
  const freeMemory = dc.capacity.memoryMiB - used.memoryMiB;
  if (group.count * group.vcpus > freeVcpus || group.count * group.memoryMiB > freeMemory) {
    throw exhausted(
      `datacenter ${dc.name} has ${freeVcpus} of ${dc.capacity.vcpus} vCPUs and ${freeMemory} of ` +
        `${dc.capacity.memoryMiB} MiB free; ${group.count} x (${group.vcpus} vCPU, ${group.memoryMiB} MiB) ` +
        `does not fit: ask for fewer or smaller VMs, or another datacenter`,
    );
  }
}

/** Whether `next` holds more of its datacenter than `before` (only a growth is checked). */
export function groupGrows(before: VmGroupRecord, next: VmGroupRecord): boolean {
  return (
    next.count * next.vcpus > before.count * before.vcpus ||
    next.count * next.memoryMiB > before.count * before.memoryMiB
  );
}

/** Whether two group records are the same, field by field. */
export function sameVmGroup(a: VmGroupRecord, b: VmGroupRecord): boolean {
  return (
    a.requestId === b.requestId &&
    a.datacenter === b.datacenter &&
    a.digest === b.digest &&
    a.count === b.count &&
    a.vcpus === b.vcpus &&
    a.memoryMiB === b.memoryMiB &&
    a.createdAt === b.createdAt
  );
}

/** INVALID_ARGUMENT unless `next` is a new state of the same group (request id, datacenter). */
export function checkGroupUpdate(expected: VmGroupRecord, next: VmGroupRecord): void {
  if (expected.requestId !== next.requestId || expected.datacenter !== next.datacenter) {
    throw invalid(
      `VM group update from "${expected.requestId}" in ${expected.datacenter} to "${next.requestId}" in ` +
        `${next.datacenter} changes its identity: an update keeps the request id and datacenter; ` +
        `start a new group instead`,
    );
  }
}

/**
 * What a compare-and-swap of a group does, given what is stored: "done" when it already equals
 * `next` (a retried update), "changed" when it is gone or no longer equals `expected`, else "write".
 */
export function groupUpdateStep(
  stored: VmGroupRecord | undefined,
  expected: VmGroupRecord,
  next: VmGroupRecord,
): "done" | "changed" | "write" {
  if (stored && sameVmGroup(stored, next)) return "done";
  if (!stored || !sameVmGroup(stored, expected)) return "changed";
  return "write";
}
