import * as pulumi from "@pulumi/pulumi";
import * as gci from "../../sdk";

// The world was started by `gci world up` (one cluster-manager process per datacenter, one
// catalog); this stack registers each datacenter, after checking its cluster manager is
// healthy, and exports the topology app stacks read through a StackReference.
const config = new pulumi.Config();
const world = gci.localWorld(config.get("worldDir"));

const datacenters = world.datacenters.map(
  (dc) =>
    new gci.Datacenter(dc.name, {
      catalog: world.catalog,
      region: dc.region,
      endpoint: dc.endpoint,
      vcpus: dc.vcpus,
      memoryMiB: dc.memoryMiB,
    }),
);

/** The catalog stack output (schema/catalog-output.schema.json). */
export const catalog = gci.Catalog.fromDatacenters(world.catalog, datacenters).output;
export const regions = world.regions;
