import { GciError } from "../../common/errors";
import type { WorldConnection } from "./connect";
import { mib } from "./progress";
import type { CatalogOutput } from "./topology";

/** An image move an update would cause: what the preview shows before any byte moves. */
export interface PlannedTransfer {
  readonly digest: string;
  /** The datacenter the image would be pulled from. */
  readonly source: string;
  /** The datacenter that would pull it (for a region, the one picked now; a start may pick another with more room). */
  readonly destination: string;
  readonly bytes: number;
}

/**
 * What the program knows about an image it uploads itself (a gci.Image of the same program):
 * where it will be and how big it is. It lets a preview plan transfers of an image that is
 * not uploaded yet.
 */
export interface ImageHint {
  readonly datacenter: string;
  readonly sizeBytes: number;
  readonly ports: readonly number[];
}

/** Where a start should go and whether it moves an image. */
export interface GroupPlan {
  readonly datacenter: string;
  readonly transfer: PlannedTransfer | null;
}

/**
 * Prints a planned transfer as an engine diagnostic, for people. Programs read the same plan
 * from the step's inputs (`plannedTransfer`), as `pulumi preview --json` and
 * `gci stack preview --json` show them.
 */
export function announcePlan(resource: string, plan: PlannedTransfer): void {
  console.log(
    `gci: ${resource}: plan: image ${plan.digest.slice(0, 19)}… moves ${plan.source} → ${plan.destination} ` +
      `(${mib(plan.bytes)}); nothing moves until \`up\``,
  );
}

/** The datacenters holding a copy of the image now ("present" placements), by name. */
export async function holders(world: WorldConnection, digest: string): Promise<string[]> {
  const placements = await (await world.catalog()).listPlacements(digest);
  return placements
    .filter((p) => p.state === "present")
    .map((p) => p.datacenter)
    .sort();
}

/**
 * The datacenter whose cluster manager receives a start: one holding the image (as in the
 * flow: the user asks the datacenter that has it, which forwards), else the image's future
 * home, else the first of the world.
 */
export function viaDatacenter(
  topology: CatalogOutput,
  present: readonly string[],
  hint?: ImageHint | null,
): string {
  return present[0] ?? hint?.datacenter ?? topology.datacenters[0].name;
}

/**
 * Plans a VM group's start without changing anything: the cluster manager's own plan when
 * the image is in the catalog (PlanStartVms is read-only), else a plan from the catalog
 * output and the program's hint about an image it has not uploaded yet.
 */
export async function planGroup(
  world: WorldConnection,
  req: {
    readonly digest: string;
    readonly region?: string;
    readonly datacenter?: string;
    readonly count: number;
    readonly machineSize: string;
  },
  hint?: ImageHint | null,
): Promise<GroupPlan> {
  const catalog = await world.catalog();
  const image = await catalog.getImage(req.digest);
  const present = image ? await holders(world, req.digest) : [];
  if (image && present.length > 0) {
    const via = viaDatacenter(world.topology, present, hint);
    try {
      const plan = await (
        await world.client(via)
      ).planStartVms({
        request_id: "plan",
        image_digest: req.digest,
        region: req.region ?? "",
        datacenter: req.datacenter ?? "",
        count: req.count,
        machine_size: req.machineSize,
      });
      return {
        datacenter: plan.datacenter,
        transfer: plan.needs_transfer
          ? {
              digest: req.digest,
              source: plan.source,
              destination: plan.datacenter,
              bytes: Number(plan.bytes),
            }
          : null,
      };
    } catch (e) {
      // An older cluster manager without PlanStartVms: plan from the catalog below.
      if (!(
        GciError.isInstance(e) &&
        e.code === "INTERNAL" &&
        /not implement|unimplemented/i.test(e.message)
      ))
        throw e;
    }
  }
  const destination = req.datacenter ?? pickInRegion(world.topology, req.region ?? "");
  const sources = present.length > 0 ? present : hint ? [hint.datacenter] : [];
  if (sources.includes(destination) || sources.length === 0)
    return { datacenter: destination, transfer: null };
  const bytes = image?.sizeBytes ?? hint?.sizeBytes ?? 0;
  return {
    datacenter: destination,
    transfer: { digest: req.digest, source: sources[0], destination, bytes },
  };
}

/** A region's datacenter as far as the output tells (the cluster manager picks by free capacity at start). */
function pickInRegion(topology: CatalogOutput, region: string): string {
  const dcs = topology.datacenters.filter((d) => d.region === region).map((d) => d.name);
  return dcs.length === 1 ? dcs[0] : dcs.length > 1 ? `${dcs[0]} (or another of ${dcs.join(", ")})` : region;
}
