import * as pulumi from "@pulumi/pulumi";
import {
  CATALOG_OUTPUT_SCHEMA,
  CatalogOutput,
  checkCatalogOutput,
} from "../provider/pulumi/dynamic/topology";
import { requireWorld, worldDir as resolveWorldDir } from "../provider/world";
import type { Datacenter } from "./datacenter";

export type { CatalogOutput, DatacenterEntry } from "../provider/pulumi/dynamic/topology";

const BRAND = Symbol.for("gci:Catalog");

/**
 * A world's topology and catalog location, as resources take it. A platform stack exports
 * `catalog.output`; an app stack reads it back with `Catalog.fromStackOutput(ref.getOutput("catalog"))`.
 * The shape is schema/catalog-output.schema.json.
 */
export class Catalog {
  /** The catalog stack output, validated. */
  readonly output: pulumi.Output<CatalogOutput>;

  private constructor(output: pulumi.Output<CatalogOutput>) {
    this.output = output;
    Object.defineProperty(this, BRAND, { value: true });
  }

  /**
   * Reads a catalog stack output (e.g. `new pulumi.StackReference("org/platform/dev").getOutput("catalog")`).
   * The program fails with every problem listed when the value is not a catalog output.
   */
  static fromStackOutput(value: pulumi.Input<unknown>): Catalog {
    const raw = pulumi.output(value) as pulumi.Output<unknown>;
    return new Catalog(raw.apply((v) => checkCatalogOutput(v, "catalog stack output")));
  }

  /**
   * The catalog output of a world started by `gci world up`, read from its world.json.
   * @param worldDir the world folder; default $GCI_WORLD, else <state folder>/world
   */
  static fromWorld(worldDir?: string): Catalog {
    const world = localWorld(worldDir);
    return new Catalog(
      pulumi.output(
        checkCatalogOutput({
          schema: CATALOG_OUTPUT_SCHEMA,
          catalog: world.catalog,
          regions: world.regions,
          datacenters: world.datacenters.map((d) => ({
            name: d.name,
            region: d.region,
            endpoint: d.endpoint,
          })),
        }),
      ),
    );
  }

  /** The catalog output of Datacenter resources recorded in the catalog at `location`. */
  static fromDatacenters(location: pulumi.Input<string>, datacenters: readonly Datacenter[]): Catalog {
    const dcs = datacenters.map((d) => pulumi.all([d.name, d.region, d.endpoint]));
    return new Catalog(
      pulumi.all([location, pulumi.all(dcs)]).apply(([catalog, list]) =>
        checkCatalogOutput({
          schema: CATALOG_OUTPUT_SCHEMA,
          catalog,
          regions: [...new Set(list.map(([, region]) => region))],
          datacenters: list.map(([name, region, endpoint]) => ({ name, region, endpoint })),
        }),
      ),
    );
  }

  /** True for any Catalog, also one made by another copy of this module. */
  static isInstance(value: unknown): value is Catalog {
    return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
  }
}

/** A local world as `gci world up` recorded it (its world.json), for a platform program to register. */
export interface LocalWorld {
  readonly dir: string;
  /** The catalog location, e.g. "sqlite:/abs/world/catalog.db". */
  readonly catalog: string;
  readonly regions: string[];
  readonly datacenters: {
    name: string;
    region: string;
    endpoint: string;
    vcpus: number;
    memoryMiB: number;
  }[];
}

/**
 * Reads the world a `gci world up` started.
 * @param worldDir the world folder; default $GCI_WORLD, else <state folder>/world
 */
export function localWorld(worldDir?: string): LocalWorld {
  const dir = resolveWorldDir(worldDir);
  const world = requireWorld(dir);
  return {
    dir,
    catalog: world.catalog,
    regions: Object.keys(world.spec.regions),
    datacenters: world.datacenters.map((d) => ({
      name: d.name,
      region: d.region,
      endpoint: d.endpoint,
      // The defaults of provider/world's WorldSpec.
      vcpus: world.spec.vcpus ?? 16,
      memoryMiB: world.spec.memoryMiB ?? 32768,
    })),
  };
}

/** What resources accept as `catalog`: a Catalog, or a catalog output value. */
export type CatalogInput = Catalog | pulumi.Input<CatalogOutput>;

/** The catalog output value of a CatalogInput. @internal */
export function catalogValue(catalog: CatalogInput): pulumi.Input<CatalogOutput> {
  return Catalog.isInstance(catalog) ? catalog.output : catalog;
}
