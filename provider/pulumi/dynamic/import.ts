import * as fs from "fs";
import { openCatalog } from "../../catalog";
import { GciError, invalid, notFound, precondition } from "../../common/errors";
import { readWorld, worldDir } from "../../world";
import { CATALOG_OUTPUT_SCHEMA, CatalogOutput } from "./topology";

/**
 * What `pulumi import` (and the `import` resource option) give a provider: an id and nothing
 * else — no inputs, no state, so no catalog output either. A GCI import id therefore may name
 * its catalog: "<id>@<catalog location>", e.g. "web-1@sqlite:/srv/gci/catalog.db". Without one,
 * the catalog is $GCI_CATALOG, else the local world's ($GCI_WORLD, else <state folder>/world, as `gci world up`).
 */
export interface ImportTarget {
  /** The resource's own id (for a VM group, its start request id). */
  readonly id: string;
  /** The catalog location, "sqlite:/..." or "etcd://...". */
  readonly location: string;
}

const EXAMPLE = '"<id>@<catalog location>" (e.g. "web-1@sqlite:/srv/gci/catalog.db")';

/** Splits an import id and finds its catalog; a clear error when neither names one. */
export function importTarget(importId: string): ImportTarget {
  const at = importId.indexOf("@");
  const id = at < 0 ? importId : importId.slice(0, at);
  if (id === "") throw invalid(`import id "${importId}" names no resource: write it as "<id>" or ${EXAMPLE}`);
  if (at >= 0) return { id, location: importId.slice(at + 1) };
  if (process.env.GCI_CATALOG) return { id, location: process.env.GCI_CATALOG };
  const dir = worldDir();
  const world = readWorld(dir);
  if (!world) {
    throw precondition(
      `import id "${importId}" names no catalog, $GCI_CATALOG is unset and no world runs in "${dir}": ` +
        `write the id as ${EXAMPLE}, or set GCI_WORLD to the world's folder`,
    );
  }
  return { id, location: world.catalog };
}

/**
 * The catalog output of the catalog at `location`, built from the datacenters it records
 * (regions and datacenters sorted by name, as `sameCatalog` compares them).
 */
export async function liveTopology(location: string): Promise<CatalogOutput> {
  if (location.startsWith("sqlite:") && !fs.existsSync(location.slice("sqlite:".length))) {
    // Opening it would create an empty catalog there.
    throw notFound(`catalog "${location}" does not exist: check the location (\`gci world status\`)`);
  }
  const catalog = await openCatalog(location);
  try {
    const dcs = (await catalog.listDatacenters()).sort((a, b) => a.name.localeCompare(b.name));
    if (dcs.length === 0) {
      throw precondition(`catalog "${location}" records no datacenter: is it the world's catalog?`);
    }
    return {
      schema: CATALOG_OUTPUT_SCHEMA,
      catalog: location,
      regions: [...new Set(dcs.map((d) => d.region))].sort(),
      datacenters: dcs.map((d) => ({ name: d.name, region: d.region, endpoint: d.endpoint })),
    };
  } finally {
    await catalog.close();
  }
}

/** The error of a kind that cannot be imported, saying what to do instead. */
export function notImportable(kind: string, instead: string): GciError {
  return invalid(`gci:${kind} cannot be imported (only VirtualMachineGroup can): ${instead}`);
}
