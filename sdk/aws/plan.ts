import type * as pulumi from "@pulumi/pulumi";
import { AMI_ID, AWS_REGION, type CloudCatalog, IMAGE_NAME, readCloudCatalog } from "../cloud/catalog";
import {
  AWS_INSTANCE_TYPES,
  type CloudGroupArgs,
  DEFAULT_COPY_TIMEOUT,
  type MachineSizeName,
  commonGroupProblems,
  unknownDatacenter,
  unknownRegion,
} from "../cloud/group";
import { CloudArgsError, type Problem, isRecord, names, show } from "../cloud/problems";

/**
 * An AMI-backed GCI image as a group refers to it: an `aws.Image` of this program, or a
 * literal `{ name: "web" }` looked up in the catalog.
 */
export interface AmiReference {
  /** The GCI image name, as the catalog lists it. */
  readonly name: string;
  /**
   * The image's home region, where copies are made from.
   * @default the first region (by name) whose catalog entry lists the image
   */
  readonly region?: string;
  /**
   * The AMI id in the home region.
   * @default the AMI the catalog lists for the image in its home region
   */
  readonly amiId?: pulumi.Input<string>;
  /**
   * The image's tags, given to its copies when the group's `copyTags` is on.
   * @default {}
   */
  readonly tags?: Readonly<Record<string, string>>;
}

/** The arguments of an AWS VirtualMachineGroup: the core group's, plus AWS options. */
export interface VirtualMachineGroupArgs extends CloudGroupArgs<AmiReference> {
  /**
   * Encrypt image copies (and the VMs' root volumes), with `kmsKeyIds[region]` when given,
   * else the account's default EBS key.
   * @default false
   */
  readonly encrypted?: boolean;
  /**
   * The AWS provider for the group's region; it must be configured for that region.
   * @default a provider the group creates with `region` set to the group's region
   */
  readonly provider?: pulumi.ProviderResource;
}

/** Where a group's AMI comes from: already in its region, or copied there from the home region. */
export type AmiSourcePlan =
  | { readonly kind: "present"; readonly amiId: pulumi.Input<string> }
  | { readonly kind: "copy"; readonly sourceRegion: string; readonly sourceAmiId: pulumi.Input<string> };

/** What an AWS VirtualMachineGroup will declare, decided from its arguments and the catalog. */
export interface AwsGroupPlan {
  readonly region: string;
  /** Set when the group was placed on a datacenter (an availability zone). */
  readonly availabilityZone?: string;
  readonly image: string;
  readonly homeRegion: string;
  readonly instanceType: string;
  readonly count: number;
  readonly ports: readonly number[];
  readonly allowedCidrs: readonly string[];
  readonly ami: AmiSourcePlan;
  readonly encrypted: boolean;
  readonly kmsKeyId?: pulumi.Input<string>;
  readonly copyTimeout: string;
  readonly retainCopy: boolean;
  readonly copyTags: boolean;
}

const KMS_ARN = /^arn:aws[a-z-]*:kms:([a-z0-9-]+):([0-9]{12}):(key|alias)\/.+$/;
const AMI_SHAPE = '"ami-" and 8 or 17 lowercase hex digits, e.g. "ami-0123456789abcdef0"';

/** The region whose catalog entry lists AMI `amiId`, if any. */
function catalogRegionOfAmi(catalog: CloudCatalog, amiId: string): string | undefined {
  for (const [region, entry] of Object.entries(catalog.aws?.regions ?? {})) {
    if (Object.values(entry.amis ?? {}).includes(amiId)) return region;
  }
  return undefined;
}

/** Problems with an AMI id given for image `image` in home region `home`. */
export function amiIdProblems(
  catalog: CloudCatalog,
  image: string,
  home: string,
  amiId: unknown,
  property: string,
): Problem[] {
  if (typeof amiId !== "string") return []; // unknown until deployment: skipped, not refused
  if (!AMI_ID.test(amiId))
    return [{ property, reason: `${show(amiId)} is not an AMI id: expected ${AMI_SHAPE}` }];
  const listedIn = catalogRegionOfAmi(catalog, amiId);
  if (listedIn !== undefined && listedIn !== home) {
    return [
      {
        property,
        reason:
          `AMI ${show(amiId)} is in region ${show(listedIn)} per the catalog, not in the image's home region ` +
          `${show(home)}: an AMI id is valid in one region only; set the image's region to ${show(listedIn)}, ` +
          `or use the AMI the catalog lists for ${show(home)}`,
      },
    ];
  }
  const listed = catalog.aws?.regions[home]?.amis?.[image];
  if (listed !== undefined && listed !== amiId) {
    return [
      {
        property,
        reason:
          `the catalog lists image ${show(image)} in ${show(home)} as ${show(listed)}, not ${show(amiId)}: ` +
          `update the catalog for the new AMI, or give the new image its own name`,
      },
    ];
  }
  return [];
}

/** Problems with AWS tags (keys 1-128 characters, not "aws:..."; values up to 256). */
export function awsTagProblems(tags: unknown, property = "tags"): Problem[] {
  if (!isRecord(tags)) return [];
  const out: Problem[] = [];
  for (const [k, v] of Object.entries(tags)) {
    const p = `${property}[${JSON.stringify(k)}]`;
    if (k.length === 0 || k.length > 128)
      out.push({ property: p, reason: "a tag key has 1 to 128 characters" });
    if (k.toLowerCase().startsWith("aws:")) {
      out.push({
        property: p,
        reason: `tag key ${show(k)} starts with "aws:", which AWS reserves: rename it`,
      });
    }
    if (typeof v === "string" && v.length > 256)
      out.push({ property: p, reason: "a tag value has at most 256 characters" });
  }
  return out;
}

interface Analysis {
  readonly problems: Problem[];
  readonly plan?: AwsGroupPlan;
}

function analyse(args: VirtualMachineGroupArgs): Analysis {
  const read = readCloudCatalog(args.catalog);
  const problems = [...commonGroupProblems(args, AWS_INSTANCE_TYPES), ...awsTagProblems(args.tags)];
  if (read.catalog === undefined) return { problems: [...read.problems, ...problems] };
  const catalog = read.catalog;
  const add = (property: string, reason: string): void => {
    problems.push({ property, reason });
  };
  const regions = catalog.aws?.regions ?? {};
  const known = Object.keys(regions).sort();

  // Placement: a region of the catalog, or an availability zone one of them lists.
  let region: string | undefined;
  let availabilityZone: string | undefined;
  if (args.datacenter !== undefined && args.region === undefined) {
    region = known.find((r) => (regions[r].availabilityZones ?? []).includes(args.datacenter as string));
    if (region === undefined) {
      const zones = known.flatMap((r) => regions[r].availabilityZones ?? []);
      problems.push(unknownDatacenter("datacenter", args.datacenter, "AWS", zones));
    } else availabilityZone = args.datacenter;
  } else if (args.region !== undefined) {
    if (typeof args.region === "string" && regions[args.region] !== undefined) region = args.region;
    else problems.push(unknownRegion("region", args.region, "AWS", known));
  }

  // The image: its name, home region and AMI there.
  const image = args.image as unknown;
  let name: string | undefined;
  let home: string | undefined;
  let homeAmi: pulumi.Input<string> | undefined;
  if (!isRecord(image)) {
    add(
      "image",
      `is ${show(image)}, expected an aws.Image or { name: "web", region?: "us-east-1", amiId?: "ami-..." }`,
    );
  } else if (typeof image.name !== "string" || !IMAGE_NAME.test(image.name)) {
    add("image.name", `${show(image.name)} is not a GCI image name (1-63 letters, digits, '.', '_', '-')`);
  } else {
    name = image.name;
    problems.push(...awsTagProblems(image.tags, "image.tags"));
    if (image.region !== undefined) {
      if (typeof image.region === "string" && regions[image.region] !== undefined) home = image.region;
      else problems.push(unknownRegion("image.region", image.region, "AWS", known));
    } else {
      home = known.find((r) => regions[r].amis?.[image.name as string] !== undefined);
      if (home === undefined) {
        add(
          "image",
          `image ${show(name)} is in no AWS region of the catalog: give image.region and image.amiId, ` +
            `or list its AMI under clouds.aws.regions[<region>].amis`,
        );
      }
    }
    if (home !== undefined) {
      if (image.amiId !== undefined) {
        problems.push(...amiIdProblems(catalog, name, home, image.amiId, "image.amiId"));
        homeAmi = image.amiId as pulumi.Input<string>;
      } else {
        homeAmi = regions[home].amis?.[name];
        if (homeAmi === undefined) {
          add(
            "image.amiId",
            `is missing, and the catalog lists no AMI for image ${show(name)} in its home region ${show(home)}: ` +
              `pass amiId, or list it under clouds.aws.regions[${JSON.stringify(home)}].amis`,
          );
        }
      }
    }
  }

  // Encryption: one KMS key per region, each a key of that region.
  const encrypted = args.encrypted ?? false;
  const keys = isRecord(args.kmsKeyIds) ? (args.kmsKeyIds as Record<string, unknown>) : {};
  if (!encrypted && Object.keys(keys).length > 0) {
    add(
      "kmsKeyIds",
      `lists keys for ${names(Object.keys(keys))} while encrypted is false: set encrypted: true`,
    );
  }
  for (const [keyRegion, key] of Object.entries(keys)) {
    const p = `kmsKeyIds[${JSON.stringify(keyRegion)}]`;
    if (!AWS_REGION.test(keyRegion) || regions[keyRegion] === undefined) {
      problems.push(unknownRegion(p, keyRegion, "AWS", known));
      continue;
    }
    if (typeof key !== "string") continue; // unknown until deployment
    const m = KMS_ARN.exec(key);
    if (!m) {
      add(p, `${show(key)} is not a KMS key ARN like "arn:aws:kms:${keyRegion}:111122223333:key/<key-id>"`);
    } else if (m[1] !== keyRegion) {
      add(
        p,
        `${show(key)} is a key of region ${show(m[1])}; a KMS key only encrypts in its own region: ` +
          `use a key of ${show(keyRegion)}`,
      );
    }
  }

  if (
    problems.length > 0 ||
    region === undefined ||
    name === undefined ||
    home === undefined ||
    homeAmi === undefined
  ) {
    return { problems };
  }
  const inRegion = regions[region].amis?.[name];
  const ami: AmiSourcePlan =
    inRegion !== undefined
      ? { kind: "present", amiId: inRegion }
      : region === home
        ? { kind: "present", amiId: homeAmi }
        : { kind: "copy", sourceRegion: home, sourceAmiId: homeAmi };
  return {
    problems,
    plan: {
      region,
      availabilityZone,
      image: name,
      homeRegion: home,
      instanceType: AWS_INSTANCE_TYPES[(args.machineSize ?? "micro") as MachineSizeName],
      count: args.count,
      ports: args.ports ?? [],
      allowedCidrs: args.allowedCidrs ?? ["0.0.0.0/0"],
      ami,
      encrypted,
      kmsKeyId: args.kmsKeyIds?.[region],
      copyTimeout: args.copyTimeout ?? DEFAULT_COPY_TIMEOUT,
      retainCopy: args.retainCopyOnDelete ?? false,
      copyTags: args.copyTags ?? true,
    },
  };
}

/**
 * Every problem with the arguments of an AWS VirtualMachineGroup, each naming the property,
 * the bad value and the fix. Pure; values unknown until deployment are skipped.
 */
export function virtualMachineGroupProblems(args: VirtualMachineGroupArgs): Problem[] {
  return analyse(args).problems;
}

/**
 * What an AWS VirtualMachineGroup declares for `args`: its region, instance type, and
 * whether its AMI is copied into the region (the catalog does not list it there) or used
 * as it is. Throws a CloudArgsError listing every problem.
 */
export function planVirtualMachineGroup(args: VirtualMachineGroupArgs, group = "group"): AwsGroupPlan {
  const { problems, plan } = analyse(args);
  if (plan === undefined || problems.length > 0) {
    throw new CloudArgsError(
      `aws.VirtualMachineGroup ${JSON.stringify(group)} has invalid arguments`,
      problems,
    );
  }
  return plan;
}
