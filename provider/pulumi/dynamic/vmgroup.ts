import { randomUUID } from "crypto";
import type * as pulumi from "@pulumi/pulumi";
import type { VmGroupRecord } from "../../catalog";
import { checkDigest, checkName } from "../../catalog/validate";
import { ClusterClient, Operation, Vm, waitForOperation } from "../../common/client";
import { GciError, invalid, notFound, precondition } from "../../common/errors";
import { DIGEST_PATTERN } from "../../common/digest";
import { MACHINE_SIZES, MAX_COUNT, machineSize } from "../../common/sizes";
import { WorldConnection, withWorld } from "./connect";
import { importTarget, liveTopology } from "./import";
import { Failures, isUnknown } from "./inputs";
import { derivedRequestId, nextGeneration } from "./keys";
import { PartialSuccess } from "./partial";
import { ImageHint, PlannedTransfer, announcePlan, holders, planGroup, viaDatacenter } from "./plan";
import { ProgressReporter } from "./progress";
import { CatalogOutput, checkTopology, findDatacenter, knownDatacenters, sameCatalog } from "./topology";

const DEFAULT_TIMEOUT_S = 600;
/** VM states that count as running (or on their way there). */
const LIVE = new Set(["provisioning", "booting", "running"]);
/** Create attempts with fresh request ids after a failed or finished-and-stopped one. */
const MAX_ATTEMPTS = 20;

/** The inputs of a VirtualMachineGroup as the engine stores them (after check). */
export interface VmGroupInputs {
  readonly catalog: CatalogOutput;
  /** The image digest. */
  readonly image: string;
  readonly imageHint?: ImageHint | null;
  readonly region?: string;
  readonly datacenter?: string;
  readonly count: number;
  readonly machineSize: string;
  /** Guest ports whose addresses are reported; undefined = every port the image declares. */
  readonly ports?: readonly number[];
  readonly timeoutSeconds: number;
  /** The start request id of a group started outside Pulumi, to take over instead of starting one. */
  readonly adopt?: string;
  /** project/stack/type/parent/name, from the SDK: the base of the idempotency key. */
  readonly requestKey: string;
  /** Replacement generation, counted by check. */
  readonly generation: number;
  /** Set by check: the transfer a create would cause, for preview and CI. */
  readonly plannedTransfer?: PlannedTransfer | null;
}

/** What happened to the image on the way to the VMs. */
export interface TransferOutput {
  readonly source: string;
  readonly destination: string;
  readonly bytes: number;
  readonly seconds: number;
}

/** The outputs: the inputs, where the group runs, and its VMs. */
export interface VmGroupOutputs extends Omit<VmGroupInputs, "datacenter" | "region"> {
  readonly requestId: string;
  /** Where the program asked for the VMs (the inputs region/datacenter). */
  readonly target: { readonly region?: string; readonly datacenter?: string };
  /** Where they run. */
  readonly datacenter: string;
  readonly region: string;
  readonly vmIds: string[];
  /** host:port of every reported port of every VM, in VM order. */
  readonly addresses: string[];
  /** http://host:port of each VM's first reported port. */
  readonly urls: string[];
  readonly transfer: TransferOutput | null;
  /** In-place updates so far (part of the scale request ids). */
  readonly updates: number;
  /** False while the group's start has not been seen through (a half-succeeded create). */
  readonly complete: boolean;
}

const label = (key: string): string => key.split("/").pop() || key;

const same = (a: unknown, b: unknown): boolean => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);

/** Where a group was asked to run: a region, a datacenter, or (checked) both. */
type Target = { readonly region?: string; readonly datacenter?: string };

const targetOf = (t: Target): Target => ({
  ...(t.region !== undefined ? { region: t.region } : {}),
  ...(t.datacenter !== undefined ? { datacenter: t.datacenter } : {}),
});

/**
 * True when VMs placed for the old target meet the new one: the same target, or an old one
 * pinned to a datacenter the new one accepts (datacenter "eu-1" -> region "eu"). An imported
 * group is read as pinned to its datacenter, so a program naming its region matches it.
 */
function targetHolds(old: Target, news: Target, regionOf: (datacenter: string) => string | undefined) {
  if (same(targetOf(old), targetOf(news))) return true;
  if (old.datacenter === undefined) return false;
  return (
    (news.datacenter === undefined || news.datacenter === old.datacenter) &&
    (news.region === undefined || news.region === regionOf(old.datacenter))
  );
}

/**
 * Why a change of inputs needs new VMs: the properties that force a replacement. `regionOf`
 * names the region of a datacenter the old target pinned.
 */
export function replaceReasons(
  olds: Partial<VmGroupOutputs> & Target,
  news: VmGroupInputs,
  oldsAreOutputs: boolean,
  regionOf: (datacenter: string) => string | undefined,
): string[] {
  const out: string[] = [];
  if (olds.image !== undefined && olds.image !== news.image) out.push("image");
  if (olds.machineSize !== undefined && olds.machineSize !== news.machineSize) out.push("machineSize");
  const oldTarget = oldsAreOutputs ? (olds.target ?? {}) : olds;
  if (!targetHolds(oldTarget, news, regionOf)) {
    if ((oldTarget.region ?? null) !== (news.region ?? null)) out.push("region");
    if ((oldTarget.datacenter ?? null) !== (news.datacenter ?? null)) out.push("datacenter");
  }
  if (olds.catalog && news.catalog && olds.catalog.catalog !== news.catalog.catalog) out.push("catalog");
  return out;
}

export const vmGroupHandlers: pulumi.dynamic.ResourceProvider = {
  async check(olds: Partial<VmGroupInputs>, news: VmGroupInputs) {
    const f = new Failures();
    const topology = checkTopology(f, news.catalog);
    f.field("image", news.image, (v) => checkDigest(v));
    f.field("count", news.count, (v) => {
      if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > MAX_COUNT) {
        throw invalid(`count ${JSON.stringify(v)} is out of range: ask for 1 to ${MAX_COUNT} VMs`);
      }
    });
    f.field("machineSize", news.machineSize, (v) => machineSize(String(v)));
    f.field("timeoutSeconds", news.timeoutSeconds, (v) => {
      if (typeof v !== "number" || !(v >= 10 && v <= 86400)) {
        throw invalid(`timeoutSeconds ${JSON.stringify(v)} must be from 10 to 86400`);
      }
    });
    if (typeof news.requestKey !== "string" || news.requestKey === "") {
      f.add(
        "requestKey",
        "is missing: create VirtualMachineGroup through the gci SDK (new gci.VirtualMachineGroup)",
      );
    }
    if (news.region === undefined && news.datacenter === undefined) {
      f.add("region", 'say where the VMs run: set region (e.g. "eu") or datacenter (e.g. "eu-1")');
    }
    if (topology) {
      f.field("region", news.region, (v) => {
        if (v === undefined) return;
        checkName("region", v);
        if (!topology.regions.includes(v as string)) {
          throw notFound(`region "${v}" is not in the catalog (regions: ${topology.regions.join(", ")})`);
        }
      });
      f.field("datacenter", news.datacenter, (v) => {
        if (v === undefined) return;
        const dc = findDatacenter(topology, String(v));
        if (!dc)
          throw notFound(`datacenter "${v}" is not in the catalog (known: ${knownDatacenters(topology)})`);
        if (typeof news.region === "string" && dc.region !== news.region) {
          throw invalid(
            `datacenter "${v}" is in region "${dc.region}", not "${news.region}": set one or the other`,
          );
        }
      });
    }
    f.field("adopt", news.adopt, (v) => {
      if (v !== undefined && (typeof v !== "string" || v.length === 0 || v.length > 512)) {
        throw invalid(
          `adopt ${JSON.stringify(v)} must be the request id of an existing VM group (\`gci vm ls\`)`,
        );
      }
    });
    f.field("ports", news.ports, (v) => {
      if (v === undefined) return;
      if (!Array.isArray(v) || v.some((p) => !Number.isInteger(p) || p < 1 || p > 65535)) {
        throw invalid(`ports ${JSON.stringify(v)} must be a list of port numbers from 1 to 65535`);
      }
    });

    let inputs: VmGroupInputs = news;
    // The live world is asked about the image even when other inputs failed, so every
    // problem shows at once; planning waits until everything else is valid.
    const digestOk = typeof news.image === "string" && DIGEST_PATTERN.test(news.image);
    if (
      !topology ||
      !digestOk ||
      isUnknown(news.imageHint) ||
      isUnknown(news.ports) ||
      isUnknown(news.adopt)
    ) {
      return { inputs, failures: f.list };
    }
    // Olds without an image: nothing exists yet (olds of an import are the group as read).
    const creating = olds?.image === undefined;
    const replaces = creating
      ? []
      : replaceReasons(olds, news, false, (dc) => findDatacenter(topology, dc)?.region);
    try {
      await withWorld(topology, async (world) => {
        const image = await (await world.catalog()).getImage(news.image);
        if (!image && !news.imageHint) {
          f.add(
            "image",
            `image ${news.image} is not in the catalog: upload it first (gci.Image in this program, or \`gci image push\`)`,
          );
          return;
        }
        const ports = await imagePorts(world, news.image, news.imageHint);
        const missing = (news.ports ?? []).filter((p) => ports !== undefined && !ports.includes(p));
        if (missing.length > 0) {
          f.add("ports", `image ${news.image} declares ports [${ports}], not ${missing.join(", ")}`);
        }
        if (creating && news.adopt !== undefined && typeof news.adopt === "string") {
          const group = await (await world.catalog()).getVmGroup(news.adopt);
          const problems = group
            ? adoptionProblems(group, news, world)
            : [`no VM group ${news.adopt} is in the catalog`];
          for (const reason of problems)
            f.add("adopt", `${reason}: fix the program or adopt another group (\`gci vm ls\`)`);
        }
        if (f.list.length > 0 || isUnknown(news)) return;
        inputs = {
          ...news,
          generation: nextGeneration(creating ? undefined : olds, replaces),
          plannedTransfer: null,
        };
        if ((creating && news.adopt === undefined) || replaces.length > 0) {
          const plan = await planGroup(world, { ...news, digest: news.image }, news.imageHint);
          inputs = { ...inputs, plannedTransfer: plan.transfer };
          if (plan.transfer) announcePlan(label(news.requestKey), plan.transfer);
        }
      });
    } catch (e) {
      if (!GciError.isInstance(e)) throw e;
      f.add("catalog", `the world could not be asked (${e.message}): is it running? \`gci world status\``);
    }
    return { inputs, failures: f.list };
  },

  async diff(_id, olds: VmGroupOutputs, news: VmGroupInputs) {
    // The old target pinned a datacenter: the group runs there, in olds.region.
    const replaces = replaceReasons(olds, news, true, () => olds.region);
    const updates = [
      ...(olds.count !== news.count ? ["count"] : []),
      ...(!same(olds.ports, news.ports) ? ["ports"] : []),
      ...(!sameCatalog(olds.catalog, news.catalog) ? ["catalog"] : []),
      ...(!same(olds.target, targetOf(news)) ? ["target"] : []),
      ...(olds.timeoutSeconds !== news.timeoutSeconds ? ["timeoutSeconds"] : []),
      ...(olds.complete === false ? ["count"] : []),
    ];
    // New VMs come up before the old ones go: never delete first.
    return { changes: replaces.length + updates.length > 0, replaces, deleteBeforeReplace: false };
  },

  async create(inputs: VmGroupInputs) {
    const progress = new ProgressReporter(label(inputs.requestKey));
    return withWorld(inputs.catalog, async (world) => {
      const catalog = await world.catalog();
      const present = await holders(world, inputs.image);
      const via = viaDatacenter(world.topology, present, inputs.imageHint);
      const size = machineSize(inputs.machineSize);
      let requestId = "";
      let op: Operation | undefined;
      let resumed: VmGroupRecord | undefined;
      // The start that answered `op`, sent again if its cluster manager restarts and forgets it.
      let resend: (() => Promise<Operation>) | undefined;
      // A replacement (generation > 0) starts its own group; only the first create adopts.
      if (inputs.adopt !== undefined && inputs.generation === 0) {
        // Import: take over a group started outside Pulumi (the engine's own import cannot
        // reach a dynamic provider: it reads without the serialized provider).
        resumed = await catalog.getVmGroup(inputs.adopt);
        const problems = resumed
          ? adoptionProblems(resumed, inputs, world)
          : [`no VM group ${inputs.adopt} exists`];
        if (problems.length > 0) throw invalid(`cannot adopt ${inputs.adopt}: ${problems.join("; ")}`);
        requestId = inputs.adopt;
        const adoptClient = await world.client(resumed!.datacenter);
        const adoptReq = {
          request_id: requestId,
          image_digest: resumed!.digest,
          datacenter: resumed!.datacenter,
          count: resumed!.count,
          vcpus: resumed!.vcpus,
          memory_mib: resumed!.memoryMiB,
        };
        resend = () => adoptClient.startVms(adoptReq);
        op = await resend();
      }
      for (let attempt = 0; !op; attempt++) {
        if (attempt >= MAX_ATTEMPTS) {
          throw new GciError(
            "FAILED_PRECONDITION",
            `${MAX_ATTEMPTS} request ids of this VM group were used up: see \`gci vm ls\` and the cluster managers' logs`,
          );
        }
        requestId = derivedRequestId("vmg", inputs.requestKey, inputs.generation, attempt);
        const req = {
          request_id: requestId,
          image_digest: inputs.image,
          region: inputs.region ?? "",
          datacenter: inputs.datacenter ?? "",
          count: inputs.count,
          machine_size: inputs.machineSize,
        };
        const existing = await catalog.getVmGroup(requestId);
        if (existing) {
          if (
            existing.digest !== inputs.image ||
            existing.vcpus !== size.vcpus ||
            existing.memoryMiB !== size.memoryMiB
          ) {
            // Left by an interrupted run whose inputs were then changed: it is nobody's now.
            progress.say(`stopping ${requestId}, left by an interrupted run with other inputs`);
            await stopGroup(world, existing.datacenter, requestId, inputs.timeoutSeconds, progress);
            continue;
          }
          progress.say(`resuming ${requestId} in ${existing.datacenter} (an earlier run was interrupted)`);
          resumed = existing;
          const owner = await world.client(existing.datacenter);
          resend = () => owner.startVms({ ...req, datacenter: existing.datacenter });
          op = await resend();
          break;
        }
        progress.say(
          `asking ${via} for ${inputs.count} × ${inputs.machineSize} in ${inputs.datacenter ?? inputs.region}`,
        );
        const viaClient = await world.client(via);
        const answer = await viaClient.startVms(req);
        if (await catalog.getVmGroup(requestId)) {
          op = answer;
          resend = () => viaClient.startVms(req);
        } else {
          // The cluster manager answered with an earlier request of this id whose group is gone.
          progress.say(`request id ${requestId} was used by a group stopped since; taking the next`);
        }
      }
      const datacenter = op.datacenter || resumed?.datacenter || via;
      if (resumed && resumed.requestId === inputs.adopt)
        progress.say(`adopted ${requestId} in ${datacenter}`);
      const client = await world.client(datacenter);
      const timeoutMs = inputs.timeoutSeconds * 1000;
      try {
        op = await waitForOperation(client, op, {
          timeoutMs,
          onProgress: (o) => progress.operation(o),
          reissue: resend,
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
        const vms = await liveVms(client, requestId).catch(() => [] as Vm[]);
        const timedOut = GciError.isInstance(e) && e.code === "DEADLINE_EXCEEDED";
        if (vms.length > 0 || timedOut) {
          const outs = outputs(inputs, requestId, datacenter, world, vms, op, 0, false);
          throw new PartialSuccess(
            `VM group ${requestId} in ${datacenter} is not complete (${vms.length} of ${inputs.count} VMs run): ` +
              `${(e as Error).message}. Run \`pulumi up\` again to finish it.`,
            requestId,
            { ...outs },
          );
        }
        // Nothing runs: stop the group so the request id is spent and a retry starts afresh.
        await stopGroup(world, datacenter, requestId, 60, progress).catch(() => undefined);
        throw e;
      }
      const vms = await liveVms(client, requestId);
      progress.say(`${vms.length} VMs run in ${datacenter}`);
      return { id: requestId, outs: outputs(inputs, requestId, datacenter, world, vms, op, 0, true) };
    });
  },

  async read(id, props: VmGroupOutputs & { region?: string; datacenter?: string }) {
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
      const outs = outputs(
        live,
        id,
        group.datacenter,
        world,
        vms,
        undefined,
        props.updates ?? 0,
        props.complete ?? true,
      );
      const target = fromInputs ? outs.target : (props.target ?? {});
      const read = { ...outs, region: dc?.region ?? outs.region, transfer: props.transfer ?? null, target };
      // The engine diffs the program's inputs against these: give it the live ones.
      return fromInputs ? { id, props: read, inputs: live } : { id, props: read };
    });
  },

  async update(id, olds: VmGroupOutputs, news: VmGroupInputs) {
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
      const outs = outputs(news, id, group.datacenter, world, vms, op, updates, true);
      return {
        outs: { ...outs, transfer: op?.start_vms?.transfer ? outs.transfer : (olds.transfer ?? null) },
      };
    });
  },

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
    return { id, props: outputs(inputs, id, group.datacenter, world, vms, undefined, 0, true), inputs };
  });
}

/** How a group started outside Pulumi differs from what the program declares. */
function adoptionProblems(group: VmGroupRecord, inputs: VmGroupInputs, world: WorldConnection): string[] {
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
async function imagePorts(
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
async function liveVms(client: ClusterClient, requestId: string): Promise<Vm[]> {
  return (await client.listVms(requestId))
    .filter((v) => v.request_id === requestId && LIVE.has(v.state))
    .sort((a, b) => a.id.localeCompare(b.id));
}

async function scale(
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
async function stopGroup(
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
function sizeName(group: VmGroupRecord): string {
  const found = Object.entries(MACHINE_SIZES).find(
    ([, s]) => s.vcpus === group.vcpus && s.memoryMiB === group.memoryMiB,
  );
  return found ? found[0] : `${group.vcpus}x${group.memoryMiB}`;
}

function outputs(
  inputs: VmGroupInputs,
  requestId: string,
  datacenter: string,
  world: WorldConnection,
  vms: Vm[],
  op: Operation | undefined,
  updates: number,
  complete: boolean,
): VmGroupOutputs {
  const selected = (vm: Vm) =>
    (vm.addresses ?? [])
      .filter((a) => inputs.ports === undefined || inputs.ports.includes(a.guest_port))
      .sort((a, b) => a.guest_port - b.guest_port);
  const t = op?.start_vms?.transfer;
  return {
    // region and datacenter are overwritten below: where the VMs run.
    ...inputs,
    requestId,
    target: targetOf(inputs),
    datacenter,
    region: findDatacenter(world.topology, datacenter)?.region ?? inputs.region ?? "",
    vmIds: vms.map((v) => v.id),
    addresses: vms.flatMap((v) => selected(v).map((a) => a.address)),
    urls: vms.flatMap((v) =>
      selected(v)
        .slice(0, 1)
        .map((a) => `http://${a.address}`),
    ),
    transfer: t
      ? { source: t.source, destination: t.destination, bytes: Number(t.bytes), seconds: Number(t.seconds) }
      : null,
    updates,
    complete,
  };
}
