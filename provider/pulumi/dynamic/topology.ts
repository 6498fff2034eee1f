import type * as pulumi from "@pulumi/pulumi";
import { invalid, notFound } from "../../common/errors";
import { isEndpoint } from "../../catalog/validate";
import { Failures, isUnknown } from "./inputs";

/** The `schema` value of the catalog stack output this version reads and writes. */
export const CATALOG_OUTPUT_SCHEMA = "gci.catalog/v1";

/**
 * The catalog stack output: a world's topology and where its catalog is. Its shape is
 * schema/catalog-output.schema.json; `catalogOutputProblems` checks the same rules (and the
 * two a JSON Schema cannot say: every datacenter's region is listed, names are unique).
 */
export interface CatalogOutput {
  readonly schema: typeof CATALOG_OUTPUT_SCHEMA;
  /** "sqlite:/abs/path/catalog.db" or "etcd://host:port,...". */
  readonly catalog: string;
  readonly regions: readonly string[];
  readonly datacenters: readonly DatacenterEntry[];
}

/** One datacenter of a catalog output. */
export interface DatacenterEntry {
  readonly name: string;
  readonly region: string;
  /** host:port of its cluster manager. */
  readonly endpoint: string;
}

const NAME = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;
const LOCATION = /^(sqlite:\/.+|etcd:\/\/.+)$/;
const HINT = "export it from the platform stack with gci.Catalog.fromWorld(...) (see examples/platform)";

const show = (v: unknown): string => (v === undefined ? "missing" : JSON.stringify(v));

/**
 * Every way `value` is not a catalog output, as check failures whose property is a path
 * under `where` (e.g. "catalog.datacenters[1].endpoint"). Values unknown during preview are
 * skipped. An empty list means the value is a valid CatalogOutput.
 */
export function catalogOutputProblems(value: unknown, where = "catalog"): pulumi.dynamic.CheckFailure[] {
  const out: pulumi.dynamic.CheckFailure[] = [];
  const add: AddProblem = (property, reason) => out.push({ property, reason });
  if (isUnknown(value)) return out;
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    add(where, `is ${show(value)}, not a catalog stack output object: ${HINT}`);
    return out;
  }
  const v = value as Record<string, unknown>;
  if (!isUnknown(v.schema) && v.schema !== CATALOG_OUTPUT_SCHEMA) {
    add(`${where}.schema`, `is ${show(v.schema)}, expected "${CATALOG_OUTPUT_SCHEMA}": ${HINT}`);
  }
  if (!isUnknown(v.catalog) && (typeof v.catalog !== "string" || !LOCATION.test(v.catalog))) {
    add(
      `${where}.catalog`,
      `is ${show(v.catalog)}, expected the catalog location "sqlite:/abs/path/catalog.db" or "etcd://host:port,..."`,
    );
  }
  const regions = regionProblems(v.regions, where, add);
  if (!isUnknown(v.datacenters)) datacentersProblems(v, where, regions, add);
  return out;
}

/** Records one check failure. */
type AddProblem = (property: string, reason: string) => void;

/** Adds the problems of a catalog output's `regions`; the valid region names, each once. */
function regionProblems(value: unknown, where: string, add: AddProblem): Set<string> {
  const regions = new Set<string>();
  if (isUnknown(value)) return regions;
  if (!Array.isArray(value) || value.length === 0) {
    add(`${where}.regions`, `is ${show(value)}, expected a non-empty list of region names`);
    return regions;
  }
  value.forEach((r, i) => {
    if (isUnknown(r)) return;
    if (typeof r !== "string" || !NAME.test(r)) {
      add(`${where}.regions[${i}]`, `is ${show(r)}, not a region name (1-63 letters, digits, '.', '_', '-')`);
    } else if (regions.has(r)) {
      add(`${where}.regions[${i}]`, `region "${r}" is listed twice: list each region once`);
    } else regions.add(r);
  });
  return regions;
}

/** Adds the problems of a catalog output's (known) `datacenters`, given its valid `regions`. */
function datacentersProblems(
  v: Record<string, unknown>,
  where: string,
  regions: Set<string>,
  add: AddProblem,
): void {
  if (!Array.isArray(v.datacenters) || v.datacenters.length === 0) {
    add(`${where}.datacenters`, `is ${show(v.datacenters)}, expected a non-empty list of datacenters`);
    return;
  }
  // The region check applies only when the regions are a known list (else they were reported).
  const regionsKnown = Array.isArray(v.regions) && !isUnknown(v.regions);
  const names = new Set<string>();
  v.datacenters.forEach((d, i) => {
    const p = `${where}.datacenters[${i}]`;
    if (isUnknown(d)) return;
    if (typeof d !== "object" || d === null) {
      add(p, `is ${show(d)}, expected { name, region, endpoint }`);
      return;
    }
    datacenterProblems(d as Record<string, unknown>, { p, where, names, regions, regionsKnown }, add);
  });
}

/** Adds the problems of one datacenter entry at path `at.p`; records its name in `at.names`. */
function datacenterProblems(
  dc: Record<string, unknown>,
  at: {
    readonly p: string;
    readonly where: string;
    readonly names: Set<string>;
    readonly regions: Set<string>;
    readonly regionsKnown: boolean;
  },
  add: AddProblem,
): void {
  const { p, names } = at;
  if (!isUnknown(dc.name)) {
    if (typeof dc.name !== "string" || !NAME.test(dc.name)) {
      add(`${p}.name`, `is ${show(dc.name)}, not a datacenter name (1-63 letters, digits, '.', '_', '-')`);
    } else if (names.has(dc.name)) {
      add(`${p}.name`, `datacenter "${dc.name}" is listed twice: names are unique in a world`);
    } else names.add(dc.name);
  }
  if (!isUnknown(dc.region)) {
    if (typeof dc.region !== "string" || !NAME.test(dc.region)) {
      add(`${p}.region`, `is ${show(dc.region)}, not a region name`);
    } else if (at.regionsKnown && !at.regions.has(dc.region)) {
      add(`${p}.region`, `region "${dc.region}" is not in ${at.where}.regions: add it there`);
    }
  }
  if (!isUnknown(dc.endpoint) && !isEndpoint(dc.endpoint)) {
    add(`${p}.endpoint`, `is ${show(dc.endpoint)}, expected host:port like "127.0.0.1:7001"`);
  }
}

/** `value` as a CatalogOutput, or INVALID_ARGUMENT listing every problem at once. */
export function checkCatalogOutput(value: unknown, where = "catalog"): CatalogOutput {
  const problems = catalogOutputProblems(value, where);
  if (problems.length > 0) {
    throw invalid(
      `the catalog stack output is malformed:\n` +
        problems.map((p) => `  - ${p.property}: ${p.reason}`).join("\n") +
        `\n(its shape is schema/catalog-output.schema.json)`,
    );
  }
  return value as CatalogOutput;
}

/** The datacenter called `name`, or undefined. */
export function findDatacenter(topology: CatalogOutput, name: string): DatacenterEntry | undefined {
  return topology.datacenters.find((d) => d.name === name);
}

/**
 * True when two catalog outputs describe the same world: the same location, regions and
 * datacenters (name, region, endpoint), whatever their order.
 */
export function sameCatalog(a: CatalogOutput | undefined, b: CatalogOutput | undefined): boolean {
  const canonical = (t: CatalogOutput | undefined) =>
    t === undefined || t === null || typeof t !== "object"
      ? JSON.stringify(t ?? null)
      : JSON.stringify([
          t.schema,
          t.catalog,
          [...(t.regions ?? [])].sort(),
          [...(t.datacenters ?? [])]
            .map((d) => [d.name, d.region, d.endpoint])
            .sort((x, y) => String(x[0]).localeCompare(String(y[0]))),
        ]);
  return canonical(a) === canonical(b);
}

/** A sentence listing the known datacenters (for error messages). */
export function knownDatacenters(topology: CatalogOutput): string {
  return topology.datacenters.map((d) => `${d.name} (${d.region})`).join(", ");
}

/**
 * The `check` steps every resource shares: adds the catalog output's problems to `f`, then,
 * when the topology is known and sound, checks `datacenter` names one of its datacenters.
 * Returns the topology (undefined when unknown or malformed).
 */
export function checkTopology(
  f: Failures,
  catalog: unknown,
  datacenter?: unknown,
): CatalogOutput | undefined {
  f.list.push(...catalogOutputProblems(catalog));
  const topology = f.list.length === 0 && !isUnknown(catalog) ? (catalog as CatalogOutput) : undefined;
  if (topology && datacenter !== undefined) {
    f.field("datacenter", datacenter, (v) => {
      if (!findDatacenter(topology, String(v))) {
        throw notFound(
          `datacenter ${JSON.stringify(v)} is not in the catalog (known: ${knownDatacenters(topology)})`,
        );
      }
    });
  }
  return topology;
}
