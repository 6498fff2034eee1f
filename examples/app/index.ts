import * as pulumi from "@pulumi/pulumi";
import * as gci from "../../sdk";

// The platform stack's catalog output: regions, datacenters, endpoints, catalog location.
const config = new pulumi.Config();
const platform = new pulumi.StackReference(
  config.get("platformStack") ?? `organization/gci-platform/${pulumi.getStack()}`,
);
const catalog = gci.Catalog.fromStackOutput(platform.getOutput("catalog"));

// The image is uploaded to one datacenter only ...
const image = new gci.Image("web", {
  catalog,
  datacenter: config.get("imageDatacenter") ?? "us-1",
  file: config.require("imageFile"),
});

// ... and each VM group's region pulls it from there when it starts its VMs.
const groups = [
  { name: "web-eu", region: config.get("regionA") ?? "eu", count: config.getNumber("countA") ?? 2 },
  { name: "web-ap", region: config.get("regionB") ?? "ap", count: config.getNumber("countB") ?? 1 },
].map(
  (g) =>
    new gci.VirtualMachineGroup(g.name, {
      catalog,
      image,
      region: g.region,
      count: g.count,
      machineSize: config.get("machineSize") ?? "nano",
    }),
);

export const imageDigest = image.digest;
export const urls = pulumi.all(groups.map((g) => g.urls)).apply((u) => u.flat());
export const vms = pulumi
  .all(groups.map((g) => pulumi.all([g.region, g.datacenter, g.vmIds, g.urls])))
  .apply((rows) => rows.map(([region, datacenter, ids, urls]) => ({ region, datacenter, ids, urls })));
export const transfers = pulumi.all(groups.map((g) => g.transfer)).apply((t) => t.filter((x) => x !== null));
export const requestIds = pulumi.all(groups.map((g) => g.requestId));
