import * as path from "path";
import * as gcp from "@pulumi/gcp";
import * as pulumi from "@pulumi/pulumi";
import {
  type CloudCatalogInput,
  GCP_IMAGE,
  IMAGE_NAME,
  readCloudCatalog,
  gcpStorageLocation,
} from "../cloud/catalog";
import { unknownRegion } from "../cloud/group";
import { CloudArgsError, type Problem, isRecord, show } from "../cloud/problems";
import { type GcpImageReference, gcpLabelProblems, gcpName, imageIdProblems } from "./plan";

/** An image that already exists in the home region's storage location: registered, nothing is created. */
export interface ExistingImageSource {
  /** "projects/P/global/images/N" (or its https URL); checked against the catalog when known. */
  readonly imageId: pulumi.Input<string>;
}

/** A new image in the home region's storage location, made from another image (e.g. a public one). */
export interface CopiedImageSource {
  /** An image or image family path, e.g. "projects/debian-cloud/global/images/family/debian-12". */
  readonly sourceImage: pulumi.Input<string>;
}

/** A disk uploaded to Cloud Storage and made an image (`rawDisk`). */
export interface DiskImportSource {
  /** Path of a .tar.gz holding one file, disk.raw: a bootable x86_64 disk (Compute Engine's import format). */
  readonly disk: string;
  /**
   * An existing bucket to upload to.
   * @default a bucket the image creates in its storage location, and empties and deletes with it
   */
  readonly bucket?: pulumi.Input<string>;
}

/** Where a GCP image comes from. */
export type ImageSource = ExistingImageSource | CopiedImageSource | DiskImportSource;

/** The arguments of a GCP Image: the core Image's (name, home, source) on GCP. */
export interface ImageArgs {
  /** The cloud catalog, or the platform stack's catalog output (plain value) holding it under `clouds`. */
  readonly catalog: CloudCatalogInput;
  /**
   * The GCI image name groups and the catalog refer to it by.
   * @default the resource name
   */
  readonly name?: string;
  /** The home region: the image is stored in that region's storage location (catalog `storageLocation`). */
  readonly region: string;
  /** An existing image, another image to copy, or a disk to import. */
  readonly source: ImageSource;
  /**
   * Labels on everything the image creates; groups copy them to image copies.
   * @default {}
   */
  readonly tags?: Readonly<Record<string, string>>;
  /**
   * The GCP provider to use.
   * @default the default provider
   */
  readonly provider?: pulumi.ProviderResource;
}

/** Every problem with the arguments of a GCP Image. Pure; unknown values are skipped. */
export function imageProblems(args: ImageArgs, resourceName = "image"): Problem[] {
  const read = readCloudCatalog(args.catalog);
  if (read.catalog === undefined) return read.problems;
  const catalog = read.catalog;
  const out: Problem[] = [];
  const add = (property: string, reason: string): void => {
    out.push({ property, reason });
  };
  const name = args.name ?? resourceName;
  if (!IMAGE_NAME.test(name))
    add("name", `${show(name)} is not a GCI image name (1-63 letters, digits, '.', '_', '-')`);
  const regions = catalog.gcp?.regions ?? {};
  const regionOk = typeof args.region === "string" && regions[args.region] !== undefined;
  if (!regionOk) out.push(unknownRegion("region", args.region, "GCP", Object.keys(regions).sort()));
  const source = args.source as unknown;
  const kinds = isRecord(source)
    ? ["imageId", "sourceImage", "disk"].filter((k) => source[k] !== undefined)
    : [];
  if (!isRecord(source) || kinds.length !== 1) {
    add(
      "source",
      `is ${show(source)}, expected one of { imageId: "projects/P/global/images/N" }, ` +
        `{ sourceImage: "projects/debian-cloud/global/images/family/debian-12" }, { disk: "disk.tar.gz" }`,
    );
  } else if (kinds[0] === "imageId") {
    if (regionOk) out.push(...imageIdProblems(catalog, name, args.region, source.imageId, "source.imageId"));
  } else if (kinds[0] === "sourceImage") {
    if (typeof source.sourceImage === "string" && !GCP_IMAGE.test(source.sourceImage)) {
      add(
        "source.sourceImage",
        `${show(source.sourceImage)} is not an image or family path like "projects/P/global/images/N"`,
      );
    }
  } else if (typeof source.disk !== "string" || !source.disk.endsWith(".tar.gz")) {
    add(
      "source.disk",
      `${show(source.disk)} is not a .tar.gz path: Compute Engine imports a .tar.gz holding disk.raw`,
    );
  }
  out.push(...gcpLabelProblems(args.tags));
  return out;
}

/**
 * A GCI image on GCP: a Compute Engine image stored in its home region's storage location.
 * Registered from an existing image, made from another image, or imported from a disk.
 */
export class Image extends pulumi.ComponentResource implements GcpImageReference {
  /** The GCI image name. */
  readonly name: string;
  /** The home region. */
  readonly region: string;
  /** Where the image is stored: the home region's storage location. */
  readonly storageLocation: string;
  /** The image, "projects/P/global/images/N". */
  readonly imageId: pulumi.Output<string>;
  readonly tags: Readonly<Record<string, string>>;

  constructor(name: string, args: ImageArgs, opts?: pulumi.ComponentResourceOptions) {
    // Validated before anything is registered, so bad arguments leave nothing behind.
    const problems = imageProblems(args, name);
    if (problems.length > 0)
      throw new CloudArgsError(`gcp.Image ${JSON.stringify(name)} has invalid arguments`, problems);
    super("gci:gcp:Image", name, {}, opts);
    const catalog = readCloudCatalog(args.catalog).catalog?.gcp ?? { regions: {} };
    this.name = args.name ?? name;
    this.region = args.region;
    this.storageLocation = gcpStorageLocation(catalog, args.region);
    this.tags = args.tags ?? {};
    const source = args.source;
    if ("imageId" in source) {
      this.imageId = pulumi.output(source.imageId);
    } else {
      const child = { parent: this, provider: args.provider };
      const labels = { ...this.tags, "gci-image": gcpName(this.name) };
      let rawDisk: { source: pulumi.Input<string> } | undefined;
      if ("disk" in source) {
        const bucket =
          source.bucket ??
          new gcp.storage.Bucket(
            `${gcpName(name)}-import`,
            {
              location: this.storageLocation.toUpperCase(),
              forceDestroy: true,
              uniformBucketLevelAccess: true,
              labels,
              project: catalog.project,
            },
            child,
          ).name;
        const object = new gcp.storage.BucketObject(
          `${gcpName(name)}-disk`,
          {
            bucket,
            name: `gci-images/${this.name}/${path.basename(source.disk)}`,
            source: new pulumi.asset.FileAsset(source.disk),
          },
          child,
        );
        rawDisk = {
          source: pulumi.interpolate`https://storage.googleapis.com/${object.bucket}/${object.name}`,
        };
      }
      const image = new gcp.compute.Image(
        gcpName(name),
        {
          description: `GCI image ${this.name}`,
          sourceImage: "sourceImage" in source ? source.sourceImage : undefined,
          rawDisk,
          storageLocations: [this.storageLocation],
          labels,
          project: catalog.project,
        },
        child,
      );
      this.imageId = image.id;
    }
    this.registerOutputs({ imageId: this.imageId });
  }
}
