/**
 * Datacenter choice and capacity: which datacenter a start or a replica goes to (a named one,
 * checked against its region, or the one of a region with the most free vCPUs), and the one
 * sum of the vCPUs a datacenter's groups take.
 */

import type { Catalog, DatacenterRecord } from "../catalog";
import { invalid, notFound } from "../common/errors";

/** Where a call asks to run: a datacenter, a region, or both (they must agree). */
export interface PlacementRequest {
  readonly datacenter?: string;
  readonly region?: string;
}

/** The vCPUs the VM groups of `datacenter` take. */
export async function usedVcpus(catalog: Catalog, datacenter: string): Promise<number> {
  return (await catalog.listVmGroups(datacenter)).reduce((sum, g) => sum + g.vcpus * g.count, 0);
}

/** The datacenter a request names or, for a region, the one with the most free vCPUs. */
export async function pickDatacenter(catalog: Catalog, req: PlacementRequest): Promise<DatacenterRecord> {
  if (req.datacenter) return namedDatacenter(catalog, req.datacenter, req.region);
  if (!req.region) throw invalid("StartVms needs a datacenter or a region: set one of them");
  const dcs = await catalog.listDatacenters(req.region);
  if (dcs.length === 0) {
    const regions = (await catalog.listRegions()).join(", ");
    throw notFound(
      `region "${req.region}" has no datacenter in the catalog (regions: ${regions}): check the name`,
    );
  }
  // The datacenter with the most free vCPUs; ties go to the first by name.
  const free = await Promise.all(
    dcs.map(async (dc) => ({ dc, free: dc.capacity.vcpus - (await usedVcpus(catalog, dc.name)) })),
  );
  free.sort((a, b) => b.free - a.free || a.dc.name.localeCompare(b.dc.name));
  return free[0].dc;
}

/** A named datacenter's record; NOT_FOUND naming the known ones, INVALID when `region` disagrees. */
async function namedDatacenter(catalog: Catalog, name: string, region?: string): Promise<DatacenterRecord> {
  const dc = await catalog.getDatacenter(name);
  if (!dc) {
    const known = (await catalog.listDatacenters()).map((d) => d.name).join(", ");
    throw notFound(`datacenter "${name}" is not in the catalog (known: ${known}): check the name`);
  }
  if (region && dc.region !== region) {
    throw invalid(
      `datacenter "${dc.name}" is in region "${dc.region}", not "${region}": name one or the other`,
    );
  }
  return dc;
}
