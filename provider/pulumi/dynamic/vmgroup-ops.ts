/**
 * The VM-group operations the handlers share: listing a group's live VMs, scaling and stopping
 * it, and comparing a group in the catalog with what a program declares.
 */
import { randomUUID } from "crypto";
import type { VmGroupRecord } from "../../catalog";
import { ClusterClient, Operation, Vm, waitForOperation } from "../../common/client";
import { GciError } from "../../common/errors";
import { MACHINE_SIZES } from "../../common/sizes";
import type { WorldConnection } from "./connect";
import { ImageHint, holders } from "./plan";
import { ProgressReporter } from "./progress";
import { findDatacenter } from "./topology";
import type { VmGroupInputs } from "./vmgroup-types";

/** VM states that count as running (or on their way there). */
const LIVE = new Set(["provisioning", "booting", "running"]);

/** How a group started outside Pulumi differs from what the program declares. */
export function adoptionProblems(
  group: VmGroupRecord,
  inputs: VmGroupInputs,
  world: WorldConnection,
): string[] {
  const out: string[] = [];
  const size = MACHINE_SIZES[inputs.machineSize];
  if (group.digest !== inputs.image)
    out.push(`it runs image ${group.digest}, the program says ${inputs.image}`);
  if (size && (group.vcpus !== size.vcpus || group.memoryMiB !== size.memoryMiB)) {
    out.push(`its VMs are ${sizeName(group)}, the program says ${inputs.machineSize}`);
  }
  if (inputs.datacenter !== undefined && group.datacenter !== inputs.datacenter) {
    out.push(`it runs in ${group.datacenter}, the program says ${inputs.datacenter}`);
  }
  const region = findDatacenter(world.topology, group.datacenter)?.region;
  if (inputs.region !== undefined && region !== undefined && region !== inputs.region) {
    out.push(`it runs in region ${region}, the program says ${inputs.region}`);
  }
  return out;
}

/** The ports of an image: from its cluster manager when uploaded, else from the program's hint. */
export async function imagePorts(
  world: WorldConnection,
  digest: string,
  hint?: ImageHint | null,
): Promise<readonly number[] | undefined> {
  const present = await holders(world, digest);
  if (present.length === 0) return hint?.ports;
  const image = await (await world.client(present[0])).getImage(digest);
  return image.ports ?? [];
}

/** The VMs of a start request that run or are on their way, sorted by id. */
export async function liveVms(client: ClusterClient, requestId: string): Promise<Vm[]> {
  return (await client.listVms(requestId))
    .filter((v) => v.request_id === requestId && LIVE.has(v.state))
    .sort((a, b) => a.id.localeCompare(b.id));
}

/** Scales the group `startRequestId` to `count` VMs and waits until it is done. */
export async function scale(
  client: ClusterClient,
  requestId: string,
  startRequestId: string,
  count: number,
  timeoutMs: number,
  progress: ProgressReporter,
): Promise<void> {
  const op = await client.scaleVms(requestId, startRequestId, count);
  await waitForOperation(client, op, {
    timeoutMs,
    onProgress: (o) => progress.operation(o),
    // A scale sets an absolute count: sent again after a restart, it converges the same.
    reissue: () => client.scaleVms(requestId, startRequestId, count),
  });
}

/**
 * Stops every VM of a start request and waits (bounded) until none is left. Stopping is
 * idempotent whatever the request id, so each attempt takes a fresh one.
 */
export async function stopGroup(
  world: WorldConnection,
  datacenter: string,
  requestId: string,
  timeoutSeconds: number,
  progress: ProgressReporter,
): Promise<void> {
  const client = await world.client(datacenter);
  let op: Operation;
  try {
    op = await client.stopVms(`${requestId}-stop-${randomUUID().slice(0, 8)}`, requestId);
  } catch (e) {
    if (GciError.isInstance(e) && e.code === "NOT_FOUND") return;
    throw e;
  }
  progress.say(`stopping the VMs of ${requestId} in ${datacenter}`);
  await waitForOperation(client, op, {
    timeoutMs: timeoutSeconds * 1000,
    onProgress: (o) => progress.operation(o),
  });
  const left = await liveVms(client, requestId);
  if (left.length > 0) {
    throw new GciError(
      "FAILED_PRECONDITION",
      `${left.length} VMs of ${requestId} still run in ${datacenter} after the stop (${left.map((v) => v.id).join(", ")}): ` +
        "see `gci vm ls`, then run destroy again",
    );
  }
}

/** The name of a group's machine size, or "<vcpus>x<memory>" for a size without one. */
export function sizeName(group: VmGroupRecord): string {
  const found = Object.entries(MACHINE_SIZES).find(
    ([, s]) => s.vcpus === group.vcpus && s.memoryMiB === group.memoryMiB,
  );
  return found ? found[0] : `${group.vcpus}x${group.memoryMiB}`;
}
