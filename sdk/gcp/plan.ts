import type * as pulumi from "@pulumi/pulumi";
import {
  type CloudCatalog,
  GCP_IMAGE,
  IMAGE_NAME,
  readCloudCatalog,
  gcpStorageLocation,
} from "../cloud/catalog";
import {
  type CloudGroupArgs,
  DEFAULT_COPY_TIMEOUT,
  GCP_MACHINE_TYPES,
  type MachineSizeName,
  commonGroupProblems,
  unknownDatacenter,
  unknownRegion,
} from "../cloud/group";
import { CloudArgsError, type Problem, isRecord, show } from "../cloud/problems";

/**
 * A GCP-backed GCI image as a group refers to it: a `gcp.Image` of this program, or a
 * literal `{ name: "web" }` looked up in the catalog.
 */
export interface GcpImageReference {
  /** The GCI image name, as the catalog lists it. */
  readonly name: string;
  /**
   * The image's home region: its image is stored in that region's storage location.
   * @default the first region (by name) whose catalog entry lists the image
   */
  readonly region?: string;
  /**
   * The image in the home region's storage location ("projects/P/global/images/N").
   * @default the image the catalog lists for the image in its home region
   */
  readonly imageId?: pulumi.Input<string>;
  /**
   * The image's labels, given to its copies when the group's `copyTags` is on.
   * @default {}
   */
  readonly tags?: Readonly<Record<string, string>>;
}

/** The arguments of a GCP VirtualMachineGroup: the core group's, plus GCP options. */
export interface VirtualMachineGroupArgs extends CloudGroupArgs<GcpImageReference> {
  /**
   * The VPC network the VMs (and the firewall rule for `ports`) are in.
   * @default "default"
   */
  readonly network?: pulumi.Input<string>;
  /**
   * The GCP provider to use.
   * @default the default provider (its project unless the catalog names one)
   */
  readonly provider?: pulumi.ProviderResource;
}

/** Where a group's image comes from: stored where its region stores images, or copied there. */
export type GcpImageSourcePlan =
  | { readonly kind: "present"; readonly imageId: pulumi.Input<string> }
  | { readonly kind: "copy"; readonly sourceLocation: string; readonly sourceImageId: pulumi.Input<string> };

/** What a GCP VirtualMachineGroup will declare, decided from its arguments and the catalog. */
export interface GcpGroupPlan {
  readonly region: string;
  /** The zone the VMs run in: the datacenter named, else the region's first zone. */
  readonly zone: string;
  readonly image: string;
  readonly homeRegion: string;
  /** The storage location of the group's region. */
  readonly storageLocation: string;
  readonly machineType: string;
  readonly count: number;
  readonly ports: readonly number[];
  readonly allowedCidrs: readonly string[];
  readonly source: GcpImageSourcePlan;
  readonly kmsKeyId?: pulumi.Input<string>;
  readonly copyTimeout: string;
  readonly retainCopy: boolean;
  readonly copyTags: boolean;
  readonly project?: string;
}

const LABEL_KEY = /^[a-z][a-z0-9_-]{0,62}$/;
const LABEL_VALUE = /^[a-z0-9_-]{0,63}$/;
const KMS_KEY = /^projects\/[^/]+\/locations\/[^/]+\/keyRings\/[^/]+\/cryptoKeys\/[^/]+$/;

/**
 * `value` made fit for a GCP name, label value or network tag: lowercase letters, digits and
 * '-', a letter first, at most 50 characters (room for the suffix Pulumi's autonaming adds). @internal
 */
export function gcpName(value: string): string {
  const safe = value
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, "-")
    .replace(/^[^a-z]/, (c) => `g${c}`)
    .slice(0, 50)
    .replace(/-+$/, "");
  return safe === "" ? "gci" : safe;
}

/** The storage location where the catalog lists image path `imageId`, if anywhere. */
function catalogLocationOfImage(catalog: CloudCatalog, imageId: string): string | undefined {
  const gcp = catalog.gcp;
  if (!gcp) return undefined;
  for (const [region, entry] of Object.entries(gcp.regions)) {
    if (Object.values(entry.images ?? {}).includes(imageId)) return gcpStorageLocation(gcp, region);
  }
  return undefined;
}

/** The image the catalog lists for `image` where `location` stores images (the region itself first). */
function catalogImageAt(catalog: CloudCatalog, image: string, region: string): string | undefined {
  const gcp = catalog.gcp;
  if (!gcp) return undefined;
  const location = gcpStorageLocation(gcp, region);
  const own = gcp.regions[region]?.images?.[image];
  if (own !== undefined) return own;
  for (const r of Object.keys(gcp.regions).sort()) {
    const listed = gcp.regions[r].images?.[image];
    if (listed !== undefined && gcpStorageLocation(gcp, r) === location) return listed;
  }
  return undefined;
}

/** Problems with an image path given for image `image` whose home region is `home`. */
export function imageIdProblems(
  catalog: CloudCatalog,
  image: string,
  home: string,
  imageId: unknown,
  property: string,
): Problem[] {
  if (typeof imageId !== "string") return []; // unknown until deployment: skipped, not refused
  if (!GCP_IMAGE.test(imageId)) {
    return [
      {
        property,
        reason: `${show(imageId)} is not an image path like "projects/my-project/global/images/web"`,
      },
    ];
  }
  const location = gcpStorageLocation(catalog.gcp ?? { regions: {} }, home);
  const listedAt = catalogLocationOfImage(catalog, imageId);
  if (listedAt !== undefined && listedAt !== location) {
    return [
      {
        property,
        reason:
          `image ${show(imageId)} is stored in ${show(listedAt)} per the catalog, not in ${show(location)} where ` +
          `home region ${show(home)} stores images: set the image's region to one that stores images in ` +
          `${show(listedAt)}, or use the image the catalog lists for ${show(home)}`,
      },
    ];
  }
  const listed = catalogImageAt(catalog, image, home);
  if (listed !== undefined && listed !== imageId) {
    return [
      {
        property,
        reason:
          `the catalog lists image ${show(image)} in ${show(location)} as ${show(listed)}, not ${show(imageId)}: ` +
          `update the catalog for the new image, or give the new image its own name`,
      },
    ];
  }
  return [];
}

/** Problems with GCP labels (keys: lowercase letter first, then a-z 0-9 _ -; values the same, may be empty). */
export function gcpLabelProblems(labels: unknown, property = "tags"): Problem[] {
  if (!isRecord(labels)) return [];
  const out: Problem[] = [];
  for (const [k, v] of Object.entries(labels)) {
    const p = `${property}[${JSON.stringify(k)}]`;
    if (!LABEL_KEY.test(k)) {
      out.push({
        property: p,
        reason: `${show(k)} is not a GCP label key: lowercase letter first, then a-z, 0-9, '_', '-'`,
      });
    }
    if (typeof v === "string" && !LABEL_VALUE.test(v)) {
      out.push({
        property: p,
        reason: `${show(v)} is not a GCP label value: up to 63 of a-z, 0-9, '_', '-'`,
      });
    }
  }
  return out;
}

interface Analysis {
  readonly problems: Problem[];
  readonly plan?: GcpGroupPlan;
}

function analyse(args: VirtualMachineGroupArgs): Analysis {
  const read = readCloudCatalog(args.catalog);
  const problems = [...commonGroupProblems(args, GCP_MACHINE_TYPES), ...gcpLabelProblems(args.tags)];
  if (read.catalog === undefined) return { problems: [...read.problems, ...problems] };
  const catalog = read.catalog;
  const add = (property: string, reason: string): void => {
    problems.push({ property, reason });
  };
  const gcp = catalog.gcp ?? { regions: {} };
  const regions = gcp.regions;
  const known = Object.keys(regions).sort();

  // Placement: a region of the catalog (its first zone), or a zone one of them lists.
  let region: string | undefined;
  let zone: string | undefined;
  if (args.datacenter !== undefined && args.region === undefined) {
    region = known.find((r) => regions[r].zones.includes(args.datacenter as string));
    if (region === undefined) {
      problems.push(
        unknownDatacenter(
          "datacenter",
          args.datacenter,
          "GCP",
          known.flatMap((r) => regions[r].zones),
        ),
      );
    } else zone = args.datacenter;
  } else if (args.region !== undefined) {
    if (typeof args.region === "string" && regions[args.region] !== undefined) {
      region = args.region;
      zone = regions[region].zones[0];
    } else problems.push(unknownRegion("region", args.region, "GCP", known));
  }

  // The image: its name, home region and image there.
  const image = args.image as unknown;
  let name: string | undefined;
  let home: string | undefined;
  let homeImage: pulumi.Input<string> | undefined;
  if (!isRecord(image)) {
    add(
      "image",
      `is ${show(image)}, expected a gcp.Image or { name: "web", region?: "europe-west1", imageId?: "..." }`,
    );
  } else if (typeof image.name !== "string" || !IMAGE_NAME.test(image.name)) {
    add("image.name", `${show(image.name)} is not a GCI image name (1-63 letters, digits, '.', '_', '-')`);
  } else {
    name = image.name;
    problems.push(...gcpLabelProblems(image.tags, "image.tags"));
    if (image.region !== undefined) {
      if (typeof image.region === "string" && regions[image.region] !== undefined) home = image.region;
      else problems.push(unknownRegion("image.region", image.region, "GCP", known));
    } else {
      home = known.find((r) => regions[r].images?.[image.name as string] !== undefined);
      if (home === undefined) {
        add(
          "image",
          `image ${show(name)} is in no GCP region of the catalog: give image.region and image.imageId, ` +
            `or list it under clouds.gcp.regions[<region>].images`,
        );
      }
    }
    if (home !== undefined) {
      if (image.imageId !== undefined) {
        problems.push(...imageIdProblems(catalog, name, home, image.imageId, "image.imageId"));
        homeImage = image.imageId as pulumi.Input<string>;
      } else {
        homeImage = catalogImageAt(catalog, name, home);
        if (homeImage === undefined) {
          add(
            "image.imageId",
            `is missing, and the catalog lists no image ${show(name)} where home region ${show(home)} stores images: ` +
              `pass imageId, or list it under clouds.gcp.regions[${JSON.stringify(home)}].images`,
          );
        }
      }
    }
  }

  for (const [keyRegion, key] of Object.entries(isRecord(args.kmsKeyIds) ? args.kmsKeyIds : {})) {
    const p = `kmsKeyIds[${JSON.stringify(keyRegion)}]`;
    if (regions[keyRegion] === undefined) problems.push(unknownRegion(p, keyRegion, "GCP", known));
    else if (typeof key === "string" && !KMS_KEY.test(key)) {
      add(p, `${show(key)} is not a Cloud KMS key like "projects/P/locations/L/keyRings/R/cryptoKeys/K"`);
    }
  }

  if (problems.length > 0 || !region || !zone || !name || !home || homeImage === undefined)
    return { problems };
  const location = gcpStorageLocation(gcp, region);
  const homeLocation = gcpStorageLocation(gcp, home);
  const present = catalogImageAt(catalog, name, region);
  const source: GcpImageSourcePlan =
    present !== undefined
      ? { kind: "present", imageId: present }
      : location === homeLocation
        ? { kind: "present", imageId: homeImage }
        : { kind: "copy", sourceLocation: homeLocation, sourceImageId: homeImage };
  return {
    problems,
    plan: {
      region,
      zone,
      image: name,
      homeRegion: home,
      storageLocation: location,
      machineType: GCP_MACHINE_TYPES[(args.machineSize ?? "micro") as MachineSizeName],
      count: args.count,
      ports: args.ports ?? [],
      allowedCidrs: args.allowedCidrs ?? ["0.0.0.0/0"],
      source,
      kmsKeyId: args.kmsKeyIds?.[region],
      copyTimeout: args.copyTimeout ?? DEFAULT_COPY_TIMEOUT,
      retainCopy: args.retainCopyOnDelete ?? false,
      copyTags: args.copyTags ?? true,
      project: gcp.project,
    },
  };
}

/**
 * Every problem with the arguments of a GCP VirtualMachineGroup, each naming the property,
 * the bad value and the fix. Pure; values unknown until deployment are skipped.
 */
export function virtualMachineGroupProblems(args: VirtualMachineGroupArgs): Problem[] {
  return analyse(args).problems;
}

/**
 * What a GCP VirtualMachineGroup declares for `args`: its zone, machine type, and whether
 * its image is copied into the region's storage location or used as it is. Throws a
 * CloudArgsError listing every problem.
 */
export function planVirtualMachineGroup(args: VirtualMachineGroupArgs, group = "group"): GcpGroupPlan {
  const { problems, plan } = analyse(args);
  if (plan === undefined || problems.length > 0) {
    throw new CloudArgsError(
      `gcp.VirtualMachineGroup ${JSON.stringify(group)} has invalid arguments`,
      problems,
    );
  }
  return plan;
}
