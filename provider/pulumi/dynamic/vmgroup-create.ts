/**
 * The VirtualMachineGroup's create, in steps: adopt a group started outside Pulumi, or start
 * one under a request id derived from the resource (resuming a group an interrupted run left,
 * taking the next id when one is spent), then wait for it and report what runs — also when
 * only part of it does.
 */
import type { Catalog, VmGroupRecord } from "../../catalog";
import { Operation, StartVmsRequest, Vm, waitForOperation } from "../../common/client";
import { GciError, invalid } from "../../common/errors";
import { machineSize } from "../../common/sizes";
import { WorldConnection, withWorld } from "./connect";
import { derivedRequestId } from "./keys";
import { PartialSuccess } from "./partial";
import { holders, viaDatacenter } from "./plan";
import { ProgressReporter } from "./progress";
import { adoptionProblems, liveVms, scale, stopGroup } from "./vmgroup-ops";
import { outputs } from "./vmgroup-outputs";
import { VmGroupInputs, label } from "./vmgroup-types";

/** Create attempts with fresh request ids after a failed or finished-and-stopped one. */
const MAX_ATTEMPTS = 20;

/** A start a cluster manager answered: the group's id, its operation and how to send it again. */
interface Started {
  readonly requestId: string;
  readonly op: Operation;
  /** The group as the catalog had it before: adopted or resumed, else undefined (a new one). */
  readonly resumed?: VmGroupRecord;
  /** The start that answered `op`, sent again if its cluster manager restarts and forgets it. */
  readonly resend: () => Promise<Operation>;
}

/** What every create step works with. */
interface CreateContext {
  readonly inputs: VmGroupInputs;
  readonly world: WorldConnection;
  readonly catalog: Catalog;
  readonly progress: ProgressReporter;
  /** The datacenter the start goes through (one that holds the image, or the hint's). */
  readonly via: string;
}

/** The engine's create: the group's id and outputs, or a PartialSuccess naming what runs. */
export async function createVmGroup(inputs: VmGroupInputs) {
  const progress = new ProgressReporter(label(inputs.requestKey));
  return withWorld(inputs.catalog, async (world) => {
    const catalog = await world.catalog();
    const present = await holders(world, inputs.image);
    const via = viaDatacenter(world.topology, present, inputs.imageHint);
    const ctx: CreateContext = { inputs, world, catalog, progress, via };
    // A replacement (generation > 0) starts its own group; only the first create adopts.
    const adopting = inputs.adopt !== undefined && inputs.generation === 0;
    const started = adopting ? await adopt(ctx, inputs.adopt as string) : await start(ctx);
    return finish(ctx, started);
  });
}

/**
 * Import: take over the group `requestId` started outside Pulumi (the engine's own import
 * cannot reach a dynamic provider: it reads without the serialized provider).
 */
async function adopt(ctx: CreateContext, requestId: string): Promise<Started> {
  const group = await ctx.catalog.getVmGroup(requestId);
  const problems = group
    ? adoptionProblems(group, ctx.inputs, ctx.world)
    : [`no VM group ${requestId} exists`];
  if (!group || problems.length > 0) throw invalid(`cannot adopt ${requestId}: ${problems.join("; ")}`);
  const client = await ctx.world.client(group.datacenter);
  const req: StartVmsRequest = {
    request_id: requestId,
    image_digest: group.digest,
    datacenter: group.datacenter,
    count: group.count,
    vcpus: group.vcpus,
    memory_mib: group.memoryMiB,
  };
  const resend = () => client.startVms(req);
  return { requestId, op: await resend(), resumed: group, resend };
}

/** Starts the group under the first request id of this resource that is not spent. */
async function start(ctx: CreateContext): Promise<Started> {
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const started = await startAttempt(ctx, attempt);
    if (started) return started;
  }
  throw new GciError(
    "FAILED_PRECONDITION",
    `${MAX_ATTEMPTS} request ids of this VM group were used up: see \`gci vm ls\` and the cluster managers' logs`,
  );
}

/**
 * One request id: resumes the group an interrupted run left under it, or starts it; undefined
 * when the id is spent (a group with other inputs stopped now, or one stopped since).
 */
async function startAttempt(ctx: CreateContext, attempt: number): Promise<Started | undefined> {
  const { inputs, progress } = ctx;
  const requestId = derivedRequestId("vmg", inputs.requestKey, inputs.generation, attempt);
  const req: StartVmsRequest = {
    request_id: requestId,
    image_digest: inputs.image,
    region: inputs.region ?? "",
    datacenter: inputs.datacenter ?? "",
    count: inputs.count,
    machine_size: inputs.machineSize,
  };
  const existing = await ctx.catalog.getVmGroup(requestId);
  if (existing) return resume(ctx, existing, requestId, req);
  progress.say(
    `asking ${ctx.via} for ${inputs.count} × ${inputs.machineSize} in ${inputs.datacenter ?? inputs.region}`,
  );
  const viaClient = await ctx.world.client(ctx.via);
  const answer = await viaClient.startVms(req);
  if (await ctx.catalog.getVmGroup(requestId))
    return { requestId, op: answer, resend: () => viaClient.startVms(req) };
  // The cluster manager answered with an earlier request of this id whose group is gone.
  progress.say(`request id ${requestId} was used by a group stopped since; taking the next`);
  return undefined;
}

/**
 * The group an interrupted run left under `requestId`: taken up where it runs when it has the
 * inputs' image and size, else stopped (undefined: the id is spent).
 */
async function resume(
  ctx: CreateContext,
  existing: VmGroupRecord,
  requestId: string,
  req: StartVmsRequest,
): Promise<Started | undefined> {
  const { inputs, progress } = ctx;
  const size = machineSize(inputs.machineSize);
  if (
    existing.digest !== inputs.image ||
    existing.vcpus !== size.vcpus ||
    existing.memoryMiB !== size.memoryMiB
  ) {
    // Left by an interrupted run whose inputs were then changed: it is nobody's now.
    progress.say(`stopping ${requestId}, left by an interrupted run with other inputs`);
    await stopGroup(ctx.world, existing.datacenter, requestId, inputs.timeoutSeconds, progress);
    return undefined;
  }
  progress.say(`resuming ${requestId} in ${existing.datacenter} (an earlier run was interrupted)`);
  const owner = await ctx.world.client(existing.datacenter);
  const resend = () => owner.startVms({ ...req, datacenter: existing.datacenter });
  return { requestId, op: await resend(), resumed: existing, resend };
}

/**
 * Waits for the started group (and scales an adopted or resumed one to the count); reports a
 * group of which only part runs, or that timed out, as a PartialSuccess; stops one of which
 * nothing runs, so its request id is spent and a retry starts afresh.
 */
async function finish(ctx: CreateContext, started: Started) {
  const { inputs, world, progress } = ctx;
  const { requestId, resumed } = started;
  let op = started.op;
  const datacenter = op.datacenter || resumed?.datacenter || ctx.via;
  if (resumed && resumed.requestId === inputs.adopt) progress.say(`adopted ${requestId} in ${datacenter}`);
  const client = await world.client(datacenter);
  const timeoutMs = inputs.timeoutSeconds * 1000;
  try {
    op = await waitForOperation(client, op, {
      timeoutMs,
      onProgress: (o) => progress.operation(o),
      reissue: started.resend,
    });
    if (resumed && resumed.count !== inputs.count) {
      await scale(
        client,
        `${requestId}-scale-0-${inputs.count}`,
        requestId,
        inputs.count,
        timeoutMs,
        progress,
      );
    }
  } catch (e) {
    // Listing failed too: report no VM running; the error the create failed with is what counts.
    const vms = await liveVms(client, requestId).catch(() => [] as Vm[]);
    const timedOut = GciError.isInstance(e) && e.code === "DEADLINE_EXCEEDED";
    if (vms.length > 0 || timedOut) {
      const outs = outputs({ inputs, requestId, datacenter, world, vms, op, complete: false });
      throw new PartialSuccess(
        `VM group ${requestId} in ${datacenter} is not complete (${vms.length} of ${inputs.count} VMs run): ` +
          `${(e as Error).message}. Run \`pulumi up\` again to finish it.`,
        requestId,
        { ...outs },
      );
    }
    // Nothing runs: stop the group so the request id is spent and a retry starts afresh. A stop
    // that fails leaves the id in use; the next create's attempt finds it and resumes or stops it,
    // so the create's own error is the one to report.
    await stopGroup(world, datacenter, requestId, 60, progress).catch(() => undefined);
    throw e;
  }
  const vms = await liveVms(client, requestId);
  progress.say(`${vms.length} VMs run in ${datacenter}`);
  return { id: requestId, outs: outputs({ inputs, requestId, datacenter, world, vms, op }) };
}
