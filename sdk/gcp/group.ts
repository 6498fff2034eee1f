import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";
import type { CloudTransfer } from "../cloud/group";
import { type VirtualMachineGroupArgs, gcpName, planVirtualMachineGroup } from "./plan";

/**
 * N VMs from a GCI image in a zone of a GCP region, decided from the catalog. When the
 * catalog does not list the image where the region stores images, the group declares a
 * `gcp.compute.Image` made from the home image (`sourceImage`) in the region's storage
 * location, visible in `pulumi preview`, and boots from it; otherwise it boots from the image
 * the catalog lists.
 */
export class VirtualMachineGroup extends pulumi.ComponentResource {
  /** The GCP region the VMs run in. */
  readonly region: pulumi.Output<string>;
  /** The zone the VMs run in. */
  readonly datacenter: pulumi.Output<string>;
  /** The instance ids ("projects/P/zones/Z/instances/N"), one per VM. */
  readonly vmIds: pulumi.Output<string[]>;
  /** host:port for every VM and port (external IP when there is one), VM by VM. */
  readonly addresses: pulumi.Output<string[]>;
  /** The image the VMs boot from: the copy when one was made. */
  readonly imageId: pulumi.Output<string>;
  /** http://host:port of each VM's first port (none without ports), as the core group reports. */
  readonly urls: pulumi.Output<string[]>;
  /** The image copy this group made into its region's storage location, or null. */
  readonly transfer: pulumi.Output<CloudTransfer | null>;

  constructor(name: string, args: VirtualMachineGroupArgs, opts?: pulumi.ComponentResourceOptions) {
    // Validated before anything is registered, so bad arguments leave nothing behind.
    const plan = planVirtualMachineGroup(args, name);
    super("gci:gcp:VirtualMachineGroup", name, {}, opts);

    const base = gcpName(name);
    const child = { parent: this, provider: args.provider };
    const labels = { ...(args.tags ?? {}), "gci-group": base, "gci-image": gcpName(plan.image) };
    const network = args.network ?? "default";

    let imageId: pulumi.Input<string>;
    let transfer: pulumi.Output<CloudTransfer | null> = pulumi.output(null);
    if (plan.source.kind === "copy") {
      const { sourceLocation, sourceImageId } = plan.source;
      const copy = new gcp.compute.Image(
        `${base}-copy-${plan.region}`,
        {
          description: `GCI image ${plan.image} copied from ${sourceLocation} for group ${name}`,
          sourceImage: sourceImageId,
          storageLocations: [plan.storageLocation],
          imageEncryptionKey: plan.kmsKeyId ? { kmsKeySelfLink: plan.kmsKeyId } : undefined,
          labels: { ...(plan.copyTags ? (args.image.tags ?? {}) : {}), ...labels },
          project: plan.project,
        },
        // The engine passes customTimeouts to the bridged provider, which bounds its wait.
        { ...child, retainOnDelete: plan.retainCopy, customTimeouts: { create: plan.copyTimeout } },
      );
      imageId = copy.id;
      transfer = pulumi.all([sourceImageId, copy.id]).apply(([source, id]) => ({
        image: plan.image,
        source: sourceLocation,
        destination: plan.storageLocation,
        sourceImageId: source,
        imageId: id,
      }));
    } else {
      imageId = plan.source.imageId;
    }

    const tag = `gci-${base}`.slice(0, 63).replace(/-+$/, "");
    if (plan.ports.length > 0) {
      new gcp.compute.Firewall(
        base,
        {
          description: `GCI group ${name}: tcp ${plan.ports.join(", ")}`,
          network,
          allows: [{ protocol: "tcp", ports: plan.ports.map(String) }],
          sourceRanges: [...plan.allowedCidrs],
          targetTags: [tag],
          project: plan.project,
        },
        child,
      );
    }

    const instances: gcp.compute.Instance[] = [];
    for (let i = 0; i < plan.count; i++) {
      instances.push(
        new gcp.compute.Instance(
          `${base}-${i}`,
          {
            zone: plan.zone,
            machineType: plan.machineType,
            bootDisk: { initializeParams: { image: imageId } },
            // An empty access config asks for an ephemeral external IP.
            networkInterfaces: [{ network, accessConfigs: [{}] }],
            metadataStartupScript: args.startupScript,
            allowStoppingForUpdate: true,
            labels,
            tags: [tag],
            project: plan.project,
          },
          child,
        ),
      );
    }

    this.region = pulumi.output(plan.region);
    this.datacenter = pulumi.output(plan.zone);
    this.vmIds = pulumi.all(instances.map((vm) => vm.id));
    const hosts = pulumi
      .all(instances.map((vm) => vm.networkInterfaces))
      .apply((all) => all.map((nics) => nics[0]?.accessConfigs?.[0]?.natIp || nics[0]?.networkIp || ""));
    this.addresses = hosts.apply((hs) => hs.flatMap((host) => plan.ports.map((port) => `${host}:${port}`)));
    this.urls = hosts.apply((hs) =>
      hs.flatMap((host) => plan.ports.slice(0, 1).map((port) => `http://${host}:${port}`)),
    );
    this.imageId = pulumi.output(imageId);
    this.transfer = transfer;
    this.registerOutputs({
      region: this.region,
      datacenter: this.datacenter,
      vmIds: this.vmIds,
      addresses: this.addresses,
      urls: this.urls,
      imageId: this.imageId,
      transfer: this.transfer,
    });
  }
}
