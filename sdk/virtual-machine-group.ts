import * as pulumi from "@pulumi/pulumi";
import { CatalogInput, catalogValue } from "./catalog";
import { Image, dependOnImage, imageInputs } from "./image";
import { requestKey } from "./key";
import { providerFor } from "./provider";

/** The arguments of a VirtualMachineGroup. Set `region` or `datacenter` (or both, if they agree). */
export interface VirtualMachineGroupArgs {
  readonly catalog: CatalogInput;
  /** An Image of this program, or an image digest ("sha256:..."). */
  readonly image: Image | pulumi.Input<string>;
  /**
   * The region to run in; its cluster managers pick the datacenter with the most room.
   * @default none (then `datacenter` is required)
   */
  readonly region?: pulumi.Input<string>;
  /**
   * The datacenter to run in.
   * @default the region's choice
   */
  readonly datacenter?: pulumi.Input<string>;
  /** How many VMs: 1 to 1000. Changing it scales in place. */
  readonly count: pulumi.Input<number>;
  /**
   * "nano", "micro", "small", "medium" or "large" (provider/common/sizes.ts). Changing it replaces the VMs.
   * @default "micro"
   */
  readonly machineSize?: pulumi.Input<string>;
  /**
   * Guest ports to report in `addresses` and `urls`.
   * @default every port the image declares
   */
  readonly ports?: pulumi.Input<pulumi.Input<number>[]>;
  /**
   * How long a start, scale or stop may take, in seconds, image transfer included.
   * @default 600
   */
  readonly timeoutSeconds?: pulumi.Input<number>;
  /**
   * Import: the request id of a VM group started outside Pulumi (`gci vm start`, see `gci vm ls`)
   * to take over instead of starting new VMs. Its image, size and place must match the
   * arguments; its count is scaled to `count`. Used only when the resource is first created.
   * (Pulumi's own `import` cannot reach dynamic providers: see README.md.)
   * @default none: start a new group
   */
  readonly adopt?: pulumi.Input<string>;
}

/** A transfer that happened: the image pulled from `source` into `destination`. */
export interface TransferInfo {
  readonly source: string;
  readonly destination: string;
  readonly bytes: number;
  readonly seconds: number;
}

/**
 * N VMs from one image in a region or datacenter. The request goes to a cluster manager that
 * holds the image, which forwards it; the datacenter that runs the VMs pulls the image when
 * it lacks it. Changing `count` scales in place; changing the image, size or place replaces
 * the group, new VMs first.
 */
export class VirtualMachineGroup extends pulumi.dynamic.Resource {
  /** The start request id: the group's id in the cluster manager (`gci vm ls`). */
  declare readonly requestId: pulumi.Output<string>;
  /** Where the VMs run. */
  declare readonly datacenter: pulumi.Output<string>;
  declare readonly region: pulumi.Output<string>;
  declare readonly image: pulumi.Output<string>;
  declare readonly count: pulumi.Output<number>;
  declare readonly machineSize: pulumi.Output<string>;
  declare readonly vmIds: pulumi.Output<string[]>;
  /** host:port of every reported port of every VM. */
  declare readonly addresses: pulumi.Output<string[]>;
  /** http://host:port of each VM's first reported port. */
  declare readonly urls: pulumi.Output<string[]>;
  /** The image transfer the start caused, or null when the image was there. */
  declare readonly transfer: pulumi.Output<TransferInfo | null>;

  constructor(name: string, args: VirtualMachineGroupArgs, opts?: pulumi.CustomResourceOptions) {
    super(
      providerFor("VirtualMachineGroup"),
      name,
      {
        catalog: catalogValue(args.catalog),
        ...imageInputs(args.image),
        region: args.region,
        datacenter: args.datacenter,
        count: args.count,
        machineSize: args.machineSize ?? "micro",
        ports: args.ports,
        timeoutSeconds: args.timeoutSeconds ?? 600,
        adopt: args.adopt,
        requestKey: requestKey("VirtualMachineGroup", name, opts),
        generation: undefined,
        plannedTransfer: undefined,
        requestId: undefined,
        vmIds: undefined,
        addresses: undefined,
        urls: undefined,
        transfer: undefined,
      },
      dependOnImage(args.image, opts),
      "gci",
      "VirtualMachineGroup",
    );
  }
}
