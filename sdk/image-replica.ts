import * as pulumi from "@pulumi/pulumi";
import { CatalogInput, catalogValue } from "./catalog";
import { Image, dependOnImage, imageInputs } from "./image";
import { requestKey } from "./key";
import { providerFor } from "./provider";
import type { TransferInfo } from "./virtual-machine-group";

/** The arguments of an ImageReplica. */
export interface ImageReplicaArgs {
  readonly catalog: CatalogInput;
  /** An Image of this program, or an image digest ("sha256:..."). */
  readonly image: Image | pulumi.Input<string>;
  /** The datacenter that gets a copy. */
  readonly datacenter: pulumi.Input<string>;
  /**
   * How long the copy may take, in seconds.
   * @default 600
   */
  readonly timeoutSeconds?: pulumi.Input<number>;
}

/**
 * An explicit copy of an image into a datacenter, for teams that want transfers as their own
 * steps (VM groups pull what they lack by themselves). Deleting it deletes that copy, unless
 * VM groups there still use it.
 */
export class ImageReplica extends pulumi.dynamic.Resource {
  declare readonly image: pulumi.Output<string>;
  declare readonly datacenter: pulumi.Output<string>;
  /** The transfer that made the copy, or null when it was there already. */
  declare readonly transfer: pulumi.Output<TransferInfo | null>;

  constructor(name: string, args: ImageReplicaArgs, opts?: pulumi.CustomResourceOptions) {
    super(
      providerFor("ImageReplica"),
      name,
      {
        catalog: catalogValue(args.catalog),
        ...imageInputs(args.image),
        datacenter: args.datacenter,
        timeoutSeconds: args.timeoutSeconds ?? 600,
        requestKey: requestKey("ImageReplica", name, opts),
        generation: undefined,
        plannedTransfer: undefined,
        transfer: undefined,
      },
      dependOnImage(args.image, opts),
      "gci",
      "ImageReplica",
    );
  }
}
