import * as path from "path";
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { type CloudCatalogInput, IMAGE_NAME, readCloudCatalog } from "../cloud/catalog";
import { durationSeconds, unknownRegion } from "../cloud/group";
import { CloudArgsError, type Problem, isRecord, show } from "../cloud/problems";
import { type AmiReference, amiIdProblems, awsTagProblems } from "./plan";

/** An AMI that already exists in the home region: registered as the image, nothing is created. */
export interface ExistingAmiSource {
  /** "ami-" and 8 or 17 hex digits; must be an AMI of the home region (checked when known). */
  readonly amiId: pulumi.Input<string>;
}

/**
 * A disk imported as a new AMI: uploaded to S3, imported as an EBS snapshot
 * (`aws.ebs.SnapshotImport`), registered as an AMI (`aws.ec2.Ami`).
 */
export interface DiskImportSource {
  /** Path of a bootable x86_64 disk image (e.g. the disk of a GCI qemu image). */
  readonly disk: string;
  /**
   * The disk's format.
   * @default "raw"
   */
  readonly format?: "raw" | "vhd" | "vmdk";
  /**
   * An existing S3 bucket in the home region to upload the disk to.
   * @default a bucket the image creates, and empties and deletes with it
   */
  readonly bucket?: pulumi.Input<string>;
  /**
   * The IAM role the VM Import service uses to read the bucket.
   * @default "vmimport"
   */
  readonly roleName?: string;
  /**
   * How long the snapshot import may take (a Go duration, 1m to 24h).
   * @default "60m"
   */
  readonly importTimeout?: string;
}

/** Where an AWS image comes from. */
export type ImageSource = ExistingAmiSource | DiskImportSource;

/** The arguments of an AWS Image: the core Image's (name, home, source) on AWS. */
export interface ImageArgs {
  /** The cloud catalog, or the platform stack's catalog output (plain value) holding it under `clouds`. */
  readonly catalog: CloudCatalogInput;
  /**
   * The GCI image name groups and the catalog refer to it by.
   * @default the resource name
   */
  readonly name?: string;
  /** The home region: where the AMI is registered, and copies are made from. */
  readonly region: string;
  /** An existing AMI, or a disk to import. */
  readonly source: ImageSource;
  /**
   * Tags on everything the image creates; groups copy them to AMI copies.
   * @default {}
   */
  readonly tags?: Readonly<Record<string, string>>;
  /**
   * The AWS provider for the home region.
   * @default a provider the image creates with `region` set to the home region
   */
  readonly provider?: pulumi.ProviderResource;
}

const FORMATS = ["raw", "vhd", "vmdk"];
const DEFAULT_IMPORT_TIMEOUT = "60m";

/** Every problem with the arguments of an AWS Image. Pure; unknown values are skipped. */
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
  const regions = catalog.aws?.regions ?? {};
  const regionOk = typeof args.region === "string" && regions[args.region] !== undefined;
  if (!regionOk) out.push(unknownRegion("region", args.region, "AWS", Object.keys(regions).sort()));
  const source = args.source as unknown;
  if (!isRecord(source) || (source.amiId === undefined) === (source.disk === undefined)) {
    add("source", `is ${show(source)}, expected { amiId: "ami-..." } or { disk: "path/to/disk.raw" }`);
  } else if (source.amiId !== undefined) {
    if (regionOk) out.push(...amiIdProblems(catalog, name, args.region, source.amiId, "source.amiId"));
  } else {
    if (typeof source.disk !== "string" || source.disk === "") {
      add("source.disk", `is ${show(source.disk)}, expected the path of a disk image file`);
    }
    if (source.format !== undefined && !FORMATS.includes(source.format as string)) {
      add(
        "source.format",
        `${show(source.format)} is not a format VM Import reads: use "raw", "vhd" or "vmdk"`,
      );
    }
    if (source.importTimeout !== undefined) {
      const s = typeof source.importTimeout === "string" ? durationSeconds(source.importTimeout) : undefined;
      if (s === undefined || s < 60 || s > 86400) {
        add(
          "source.importTimeout",
          `${show(source.importTimeout)} is not a duration from 1m to 24h, like "90m"`,
        );
      }
    }
  }
  out.push(...awsTagProblems(args.tags));
  return out;
}

/**
 * A GCI image on AWS: an AMI in a home region. Registered from an existing AMI id, or
 * imported from a disk through S3 and a snapshot import. Groups in other regions copy it.
 */
export class Image extends pulumi.ComponentResource implements AmiReference {
  /** The GCI image name. */
  readonly name: string;
  /** The home region. */
  readonly region: string;
  /** The AMI in the home region. */
  readonly amiId: pulumi.Output<string>;
  readonly tags: Readonly<Record<string, string>>;

  constructor(name: string, args: ImageArgs, opts?: pulumi.ComponentResourceOptions) {
    // Validated before anything is registered, so bad arguments leave nothing behind.
    const problems = imageProblems(args, name);
    if (problems.length > 0)
      throw new CloudArgsError(`aws.Image ${JSON.stringify(name)} has invalid arguments`, problems);
    super("gci:aws:Image", name, {}, opts);
    this.name = args.name ?? name;
    this.region = args.region;
    this.tags = args.tags ?? {};
    const source = args.source;
    if ("amiId" in source) {
      this.amiId = pulumi.output(source.amiId);
    } else {
      const tags = { ...this.tags, "gci:image": this.name };
      const provider =
        args.provider ??
        new aws.Provider(`${name}-${args.region}`, { region: args.region }, { parent: this });
      const child = { parent: this, provider };
      const bucket =
        source.bucket ?? new aws.s3.Bucket(`${name}-import`, { forceDestroy: true, tags }, child).bucket;
      const object = new aws.s3.BucketObjectv2(
        `${name}-disk`,
        {
          bucket,
          key: `gci-images/${this.name}/${path.basename(source.disk)}`,
          source: new pulumi.asset.FileAsset(source.disk),
          tags,
        },
        child,
      );
      const snapshot = new aws.ebs.SnapshotImport(
        `${name}-snapshot`,
        {
          description: `GCI image ${this.name}`,
          diskContainer: {
            format: (source.format ?? "raw").toUpperCase(),
            userBucket: { s3Bucket: object.bucket, s3Key: object.key },
          },
          roleName: source.roleName ?? "vmimport",
          tags,
        },
        { ...child, customTimeouts: { create: source.importTimeout ?? DEFAULT_IMPORT_TIMEOUT } },
      );
      const ami = new aws.ec2.Ami(
        name,
        {
          description: `GCI image ${this.name}`,
          architecture: "x86_64",
          virtualizationType: "hvm",
          enaSupport: true,
          rootDeviceName: "/dev/xvda",
          ebsBlockDevices: [
            {
              deviceName: "/dev/xvda",
              snapshotId: snapshot.id,
              volumeType: "gp3",
              deleteOnTermination: true,
            },
          ],
          tags,
        },
        child,
      );
      this.amiId = ami.id;
    }
    this.registerOutputs({ amiId: this.amiId });
  }
}
