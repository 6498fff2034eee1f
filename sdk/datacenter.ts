import * as pulumi from "@pulumi/pulumi";
import { providerFor } from "./provider";

/** The arguments of a Datacenter. */
export interface DatacenterArgs {
  /** Where the global catalog is: "sqlite:/abs/path/catalog.db" or "etcd://host:port,...". */
  readonly catalog: pulumi.Input<string>;
  /** The region the datacenter belongs to, e.g. "eu". */
  readonly region: pulumi.Input<string>;
  /**
   * The datacenter's name, unique in the world.
   * @default the resource name
   */
  readonly name?: pulumi.Input<string>;
  /** host:port of the datacenter's cluster manager. */
  readonly endpoint: pulumi.Input<string>;
  /**
   * vCPUs the datacenter can run at once.
   * @default 8
   */
  readonly vcpus?: pulumi.Input<number>;
  /**
   * Memory the datacenter can run at once, in MiB.
   * @default 16384
   */
  readonly memoryMiB?: pulumi.Input<number>;
  /**
   * Check that the cluster manager answers its health check (SERVING) before registering it.
   * @default true
   */
  readonly requireHealthy?: pulumi.Input<boolean>;
}

/** A datacenter of a region, registered in the global catalog with its cluster manager (checked healthy first). */
export class Datacenter extends pulumi.dynamic.Resource {
  declare readonly catalog: pulumi.Output<string>;
  declare readonly region: pulumi.Output<string>;
  declare readonly name: pulumi.Output<string>;
  declare readonly endpoint: pulumi.Output<string>;
  declare readonly vcpus: pulumi.Output<number>;
  declare readonly memoryMiB: pulumi.Output<number>;

  constructor(name: string, args: DatacenterArgs, opts?: pulumi.CustomResourceOptions) {
    super(
      providerFor("Datacenter"),
      name,
      { vcpus: 8, memoryMiB: 16384, requireHealthy: true, ...args, name: args.name ?? name },
      opts,
      "gci",
      "Datacenter",
    );
  }
}
