/**
 * The VirtualMachineGroup's handlers: check, diff and create live in their own modules
 * (vmgroup-check, vmgroup-diff, vmgroup-create); read, update and delete are here.
 */
import type * as pulumi from "@pulumi/pulumi";
import { Operation, waitForOperation } from "../../common/client";
import { notFound, precondition } from "../../common/errors";
import { withWorld } from "./connect";
import { importTarget, liveTopology } from "./import";
import { ProgressReporter } from "./progress";
import { checkVmGroup } from "./vmgroup-check";
import { createVmGroup } from "./vmgroup-create";
import { diffVmGroup } from "./vmgroup-diff";
import { liveVms, scale, sizeName, stopGroup } from "./vmgroup-ops";
import { outputs } from "./vmgroup-outputs";
import { DEFAULT_TIMEOUT_S, VmGroupInputs, VmGroupOutputs, label } from "./vmgroup-types";

export { MAX_COUNT } from "./vmgroup-types";
export type { TransferOutput, VmGroupInputs, VmGroupOutputs } from "./vmgroup-types";
export { replaceReasons } from "./vmgroup-diff";

export const vmGroupHandlers: pulumi.dynamic.ResourceProvider = {
  check: (olds: Partial<VmGroupInputs>, news: VmGroupInputs) => checkVmGroup(olds, news),
  diff: (_id, olds: VmGroupOutputs, news: VmGroupInputs) => diffVmGroup(olds, news),
  create: (inputs: VmGroupInputs) => createVmGroup(inputs),
  read: (id, props: VmGroupOutputs & { region?: string; datacenter?: string }) => readVmGroup(id, props),
  update: (id, olds: VmGroupOutputs, news: VmGroupInputs) => updateVmGroup(id, olds, news),

  async delete(id, props: VmGroupOutputs) {
    const progress = new ProgressReporter(label(props.requestKey ?? id));
    await withWorld(props.catalog, async (world) => {
      const group = await (await world.catalog()).getVmGroup(id);
      await stopGroup(
        world,
        group?.datacenter ?? props.datacenter,
        id,
        props.timeoutSeconds ?? 300,
        progress,
      );
    });
  },
};

/** The engine's read: the group as it runs, or an empty id when it is gone. */
async function readVmGroup(id: string, props: VmGroupOutputs & { region?: string; datacenter?: string }) {
  // No state: the engine imports a group started elsewhere (`pulumi import`).
  if (props.catalog === undefined) return readImported(id);
  return withWorld(props.catalog, async (world) => {
    const catalog = await world.catalog();
    const group = await catalog.getVmGroup(id);
    // An empty id tells the engine the group is gone.
    if (!group) return { id: "", props: {} };
    const vms = await liveVms(await world.client(group.datacenter), id);
    // Inputs without state: a read of a group the program names by id (the `id` option).
    const fromInputs = props.requestId === undefined;
    const base: VmGroupInputs = fromInputs
      ? { ...(props as unknown as VmGroupInputs) }
      : { ...props, region: props.target?.region, datacenter: props.target?.datacenter };
    const live: VmGroupInputs = {
      ...base,
      image: group.digest,
      machineSize: sizeName(group),
      count: vms.length,
      timeoutSeconds: base.timeoutSeconds ?? DEFAULT_TIMEOUT_S,
      generation: base.generation ?? 0,
    };
    const dc = await catalog.getDatacenter(group.datacenter);
    const outs = outputs({
      inputs: live,
      requestId: id,
      datacenter: group.datacenter,
      world,
      vms,
      updates: props.updates ?? 0,
      complete: props.complete ?? true,
    });
    const target = fromInputs ? outs.target : (props.target ?? {});
    const read = { ...outs, region: dc?.region ?? outs.region, transfer: props.transfer ?? null, target };
    // The engine diffs the program's inputs against these: give it the live ones.
    return fromInputs ? { id, props: read, inputs: live } : { id, props: read };
  });
}

/** The engine's update: finishes a half-succeeded start, then scales the group to the count. */
async function updateVmGroup(id: string, olds: VmGroupOutputs, news: VmGroupInputs) {
  const progress = new ProgressReporter(label(news.requestKey));
  return withWorld(news.catalog, async (world) => {
    const catalog = await world.catalog();
    const group = await catalog.getVmGroup(id);
    if (!group) {
      throw notFound(
        `VM group ${id} is gone from the catalog: run \`gci stack refresh\` so Pulumi forgets it, then \`up\` starts a new one`,
      );
    }
    const client = await world.client(group.datacenter);
    const timeoutMs = news.timeoutSeconds * 1000;
    const updates = (olds.updates ?? 0) + 1;
    let op: Operation | undefined;
    if (olds.complete === false) {
      progress.say(`finishing the start of ${id} in ${group.datacenter}`);
      const req = {
        request_id: id,
        image_digest: group.digest,
        datacenter: group.datacenter,
        count: group.count,
        vcpus: group.vcpus,
        memory_mib: group.memoryMiB,
      };
      op = await client.startVms(req);
      op = await waitForOperation(client, op, {
        timeoutMs,
        onProgress: (o) => progress.operation(o),
        reissue: () => client.startVms(req),
      });
    }
    const before = await liveVms(client, id);
    if (before.length !== news.count || group.count !== news.count) {
      progress.say(`scaling ${id} in ${group.datacenter}: ${before.length} → ${news.count} VMs`);
      await scale(client, `${id}-scale-${updates}-${news.count}`, id, news.count, timeoutMs, progress);
    }
    const vms = await liveVms(client, id);
    const outs = outputs({
      inputs: news,
      requestId: id,
      datacenter: group.datacenter,
      world,
      vms,
      op,
      updates,
    });
    return {
      outs: { ...outs, transfer: op?.start_vms?.transfer ? outs.transfer : (olds.transfer ?? null) },
    };
  });
}

/**
 * The read behind `pulumi import` and the `import` resource option: the group `importId`
 * names (its start request id, optionally "@<catalog location>", see ./import) as it runs,
 * pinned to its datacenter. Its inputs pass check, so the engine records them as they are.
 */
async function readImported(importId: string) {
  const { id, location } = importTarget(importId);
  const topology = await liveTopology(location);
  return withWorld(topology, async (world) => {
    const group = await (await world.catalog()).getVmGroup(id);
    if (!group) {
      throw notFound(
        `no VM group "${id}" is in the catalog ${location}: import one of the request ids \`gci vm ls\` lists`,
      );
    }
    const vms = await liveVms(await world.client(group.datacenter), id);
    if (vms.length === 0) {
      throw precondition(`VM group "${id}" has no VM running in ${group.datacenter}: nothing to import`);
    }
    const inputs: VmGroupInputs = {
      catalog: topology,
      image: group.digest,
      datacenter: group.datacenter,
      count: vms.length,
      machineSize: sizeName(group),
      timeoutSeconds: DEFAULT_TIMEOUT_S,
      // Its idempotency key is its own request id; a replacement takes the program's key.
      requestKey: id,
      generation: 0,
    };
    return {
      id,
      props: outputs({ inputs, requestId: id, datacenter: group.datacenter, world, vms }),
      inputs,
    };
  });
}
