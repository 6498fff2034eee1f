import * as pulumi from "@pulumi/pulumi";
import { CloudArgsError, type Problem, isRecord, names, show } from "./problems";

/**
 * The cloud part of the catalog: the `clouds` property of the platform stack's `catalog`
 * output. It says which cloud regions GCI may place VM groups in, their datacenters (AWS
 * availability zones, GCP zones), and where each image already is (an AMI id per AWS region,
 * an image per GCP region). A group in a region that does not list its image gets a copy.
 */
export interface CloudCatalog {
  /** @default no AWS regions */
  readonly aws?: AwsCatalog;
  /** @default no GCP regions */
  readonly gcp?: GcpCatalog;
}

/**
 * A catalog as the cloud components take it: the cloud catalog itself, or the platform
 * stack's whole catalog output (its plain value) with the cloud catalog under `clouds`, so
 * a program can hand the same `catalog` to GCI and cloud groups.
 */
export type CloudCatalogInput = CloudCatalog | { readonly clouds?: CloudCatalog };

/** The AWS regions of the catalog. */
export interface AwsCatalog {
  /** Keyed by AWS region name, e.g. "us-east-1". */
  readonly regions: Readonly<Record<string, AwsRegionCatalog>>;
}

/** One AWS region of the catalog. */
export interface AwsRegionCatalog {
  /**
   * The region's datacenters: availability zones a group may name as its `datacenter`.
   * @default none; a group placed by region lets AWS pick the zone
   */
  readonly availabilityZones?: readonly string[];
  /**
   * AMIs present in this region, by GCI image name: { "web": "ami-0123456789abcdef0" }.
   * @default {}
   */
  readonly amis?: Readonly<Record<string, string>>;
}

/** The GCP regions of the catalog. */
export interface GcpCatalog {
  /**
   * The project every image and instance goes in.
   * @default the gcp provider's project
   */
  readonly project?: string;
  /** Keyed by GCP region name, e.g. "europe-west1". */
  readonly regions: Readonly<Record<string, GcpRegionCatalog>>;
}

/** One GCP region of the catalog. */
export interface GcpRegionCatalog {
  /** The region's datacenters: zones, e.g. ["europe-west1-b"]. A group by region uses the first. */
  readonly zones: readonly string[];
  /**
   * Where images for this region are stored: the region itself or a multi-region ("us", "eu", "asia").
   * @default the region's name
   */
  readonly storageLocation?: string;
  /**
   * Images stored in this region's storage location, by GCI image name:
   * { "web": "projects/my-project/global/images/web-europe-west1" }.
   * @default {}
   */
  readonly images?: Readonly<Record<string, string>>;
}

/** The clouds a catalog can name. */
export type CloudName = "aws" | "gcp";

/** Where a region or datacenter of a cloud catalog is. */
export interface CloudPlacement {
  readonly cloud: CloudName;
  readonly region: string;
  /** The availability zone or zone, when a datacenter was named. */
  readonly zone?: string;
}

/** @internal */
export const AWS_REGION = /^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}$/;
/** @internal */
export const AMI_ID = /^ami-([0-9a-f]{8}|[0-9a-f]{17})$/;
/** @internal */
export const GCP_REGION = /^[a-z]+-[a-z]+[0-9]{1,2}$/;
/** @internal */
export const GCP_MULTI_REGIONS: readonly string[] = ["us", "eu", "asia"];
/** @internal */
export const GCP_IMAGE =
  /^(https:\/\/(www|compute)\.googleapis\.com\/compute\/(v1|beta)\/)?projects\/[^/\s]+\/global\/images\/(family\/)?[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;
const GCP_PROJECT = /^([a-z0-9.-]+:)?[a-z][-a-z0-9]{4,28}[a-z0-9]$/;
/** A GCI image name, as in the core catalog output. @internal */
export const IMAGE_NAME = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;

const HINT = "fix it under `clouds` in the platform stack's catalog output";
const AMI_SHAPE = 'an AMI id: "ami-" and 8 or 17 lowercase hex digits, e.g. "ami-0123456789abcdef0"';
const GCP_IMAGE_SHAPE = 'an image path like "projects/my-project/global/images/web"';

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** True when `zone` is an availability zone (or Local Zone) of AWS region `region`. @internal */
export function isAwsZoneOf(zone: string, region: string): boolean {
  return new RegExp(`^${escape(region)}([a-z]|-[a-z0-9-]*[a-z])$`).test(zone);
}

/** True when `zone` is a zone of GCP region `region`. @internal */
export function isGcpZoneOf(zone: string, region: string): boolean {
  return new RegExp(`^${escape(region)}-[a-z]$`).test(zone);
}

/** The storage location of a GCP region of the catalog. @internal */
export function gcpStorageLocation(catalog: GcpCatalog, region: string): string {
  return catalog.regions[region]?.storageLocation ?? region;
}

/**
 * Every way `value` is not a cloud catalog, as problems whose property is a path under
 * `where` (e.g. `clouds.aws.regions["us-east-1"].amis["web"]`). Pure; an empty list means
 * the value is a valid CloudCatalog.
 */
export function cloudCatalogProblems(value: unknown, where = "clouds"): Problem[] {
  const out: Problem[] = [];
  const add = (property: string, reason: string): void => {
    out.push({ property, reason });
  };
  if (!isRecord(value)) {
    add(
      where,
      `is ${show(value)}, expected an object like { aws: { regions: {...} }, gcp: { regions: {...} } }`,
    );
    return out;
  }
  // Other keys are ignored, as in the rest of the catalog output, so a newer platform stack
  // (one naming another cloud) stays readable by older programs.
  if (value.aws !== undefined) awsProblems(value.aws, `${where}.aws`, add);
  if (value.gcp !== undefined) gcpProblems(value.gcp, `${where}.gcp`, add);
  return out;
}

type Add = (property: string, reason: string) => void;

function awsProblems(aws: unknown, where: string, add: Add): void {
  if (!isRecord(aws) || !isRecord(aws.regions)) {
    add(
      `${where}.regions`,
      `is ${show(isRecord(aws) ? aws.regions : aws)}, expected an object keyed by AWS region`,
    );
    return;
  }
  const amiHome = new Map<string, string>();
  for (const [region, entry] of Object.entries(aws.regions)) {
    const at = `${where}.regions[${JSON.stringify(region)}]`;
    if (!AWS_REGION.test(region)) {
      add(at, `${show(region)} is not an AWS region name like "us-east-1": ${HINT}`);
      continue;
    }
    if (!isRecord(entry)) {
      add(at, `is ${show(entry)}, expected { availabilityZones?: [...], amis?: {...} }`);
      continue;
    }
    if (entry.availabilityZones !== undefined) {
      if (!Array.isArray(entry.availabilityZones)) {
        add(
          `${at}.availabilityZones`,
          `is ${show(entry.availabilityZones)}, expected a list like ["${region}a"]`,
        );
      } else {
        entry.availabilityZones.forEach((z, i) => {
          if (typeof z !== "string" || !isAwsZoneOf(z, region)) {
            add(
              `${at}.availabilityZones[${i}]`,
              `${show(z)} is not an availability zone of ${region}, e.g. "${region}a"`,
            );
          }
        });
      }
    }
    if (entry.amis !== undefined) {
      if (!isRecord(entry.amis)) {
        add(`${at}.amis`, `is ${show(entry.amis)}, expected an object of image name to AMI id`);
        continue;
      }
      for (const [image, ami] of Object.entries(entry.amis)) {
        const p = `${at}.amis[${JSON.stringify(image)}]`;
        if (!IMAGE_NAME.test(image))
          add(p, `${show(image)} is not a GCI image name (1-63 letters, digits, '.', '_', '-')`);
        if (typeof ami !== "string" || !AMI_ID.test(ami)) {
          add(p, `is ${show(ami)}, not ${AMI_SHAPE}`);
        } else if (amiHome.has(ami) && amiHome.get(ami) !== region) {
          add(
            p,
            `AMI ${show(ami)} is also listed in ${amiHome.get(ami)}; an AMI id belongs to one region: ${HINT}`,
          );
        } else amiHome.set(ami, region);
      }
    }
  }
}

function gcpProblems(gcp: unknown, where: string, add: Add): void {
  if (!isRecord(gcp) || !isRecord(gcp.regions)) {
    add(
      `${where}.regions`,
      `is ${show(isRecord(gcp) ? gcp.regions : gcp)}, expected an object keyed by GCP region`,
    );
    return;
  }
  if (gcp.project !== undefined && (typeof gcp.project !== "string" || !GCP_PROJECT.test(gcp.project))) {
    add(`${where}.project`, `is ${show(gcp.project)}, not a GCP project id like "my-project-123"`);
  }
  const imageLocation = new Map<string, string>();
  for (const [region, entry] of Object.entries(gcp.regions)) {
    const at = `${where}.regions[${JSON.stringify(region)}]`;
    if (!GCP_REGION.test(region)) {
      add(at, `${show(region)} is not a GCP region name like "europe-west1": ${HINT}`);
      continue;
    }
    if (!isRecord(entry)) {
      add(at, `is ${show(entry)}, expected { zones: [...], storageLocation?: "...", images?: {...} }`);
      continue;
    }
    if (!Array.isArray(entry.zones) || entry.zones.length === 0) {
      add(`${at}.zones`, `is ${show(entry.zones)}, expected a non-empty list like ["${region}-b"]`);
    } else {
      entry.zones.forEach((z, i) => {
        if (typeof z !== "string" || !isGcpZoneOf(z, region)) {
          add(`${at}.zones[${i}]`, `${show(z)} is not a zone of ${region}, e.g. "${region}-b"`);
        }
      });
    }
    const location = entry.storageLocation ?? region;
    if (
      typeof location !== "string" ||
      !(GCP_MULTI_REGIONS.includes(location) || GCP_REGION.test(location))
    ) {
      add(
        `${at}.storageLocation`,
        `is ${show(location)}, expected a region like "${region}" or a multi-region: ${names(GCP_MULTI_REGIONS)}`,
      );
      continue;
    }
    if (entry.images !== undefined) {
      if (!isRecord(entry.images)) {
        add(`${at}.images`, `is ${show(entry.images)}, expected an object of image name to image path`);
        continue;
      }
      for (const [image, path] of Object.entries(entry.images)) {
        const p = `${at}.images[${JSON.stringify(image)}]`;
        if (!IMAGE_NAME.test(image))
          add(p, `${show(image)} is not a GCI image name (1-63 letters, digits, '.', '_', '-')`);
        if (typeof path !== "string" || !GCP_IMAGE.test(path)) {
          add(p, `is ${show(path)}, not ${GCP_IMAGE_SHAPE}`);
        } else if (imageLocation.has(path) && imageLocation.get(path) !== location) {
          add(
            p,
            `image ${show(path)} is also listed where images are stored in ${show(imageLocation.get(path))}, ` +
              `but this region stores them in ${show(location)}; an image has one storage location: ${HINT}`,
          );
        } else imageLocation.set(path, location);
      }
    }
  }
}

const PLAIN_HINT =
  "cloud components decide at construction what to declare, so they need the catalog's plain value: " +
  'in an async program, `await new pulumi.StackReference("org/platform/stack").requireOutputValue("catalog")`';

/**
 * The cloud catalog of a component's `catalog` argument, or the problems that stop it
 * being read (a value known only during deployment, or a malformed catalog). @internal
 */
export function readCloudCatalog(input: unknown): {
  readonly catalog?: CloudCatalog;
  readonly problems: Problem[];
} {
  if (pulumi.Output.isInstance(input) || input instanceof Promise) {
    return { problems: [{ property: "catalog", reason: `is an Output or a Promise: ${PLAIN_HINT}` }] };
  }
  if (isRecord(input) && (input as Record<symbol, unknown>)[Symbol.for("gci:Catalog")] === true) {
    return {
      problems: [
        { property: "catalog", reason: `is a gci.Catalog, whose value is an Output: ${PLAIN_HINT}` },
      ],
    };
  }
  const whole =
    isRecord(input) && !("aws" in input) && !("gcp" in input) && ("clouds" in input || "schema" in input);
  const value = whole ? ((input as Record<string, unknown>).clouds ?? {}) : input;
  const problems = cloudCatalogProblems(value, whole ? "catalog.clouds" : "catalog");
  return problems.length > 0 ? { problems } : { catalog: value as CloudCatalog, problems };
}

/** `value` as a CloudCatalog, or a CloudArgsError listing every problem. */
export function parseCloudCatalog(value: unknown, where = "clouds"): CloudCatalog {
  const problems = cloudCatalogProblems(value, where);
  if (problems.length > 0) throw new CloudArgsError("the cloud catalog is malformed", problems);
  return value as CloudCatalog;
}

/**
 * The cloud catalog of a platform stack's `catalog` output (read with a StackReference):
 * its `clouds` property, validated. A platform stack without clouds gives an empty catalog.
 */
export function cloudCatalogFromStackOutput(catalogOutput: unknown): CloudCatalog {
  if (!isRecord(catalogOutput)) {
    throw new CloudArgsError("the catalog stack output is malformed", [
      {
        property: "catalog",
        reason: `is ${show(catalogOutput)}, expected the platform stack's catalog object`,
      },
    ]);
  }
  return parseCloudCatalog(catalogOutput.clouds ?? {}, "catalog.clouds");
}

/**
 * Which cloud a region or datacenter of the catalog is on, or undefined when the catalog
 * does not list it as a cloud one (it is then a GCI region or datacenter, run by our
 * cluster managers). Lets one program send the same group arguments to either.
 */
export function cloudPlacement(
  catalog: CloudCatalog,
  where: { readonly region?: string; readonly datacenter?: string },
): CloudPlacement | undefined {
  const { region, datacenter } = where;
  for (const [r, entry] of Object.entries(catalog.aws?.regions ?? {})) {
    if (datacenter !== undefined && (entry.availabilityZones ?? []).includes(datacenter)) {
      return { cloud: "aws", region: r, zone: datacenter };
    }
    if (datacenter === undefined && region === r) return { cloud: "aws", region: r };
  }
  for (const [r, entry] of Object.entries(catalog.gcp?.regions ?? {})) {
    if (datacenter !== undefined && entry.zones.includes(datacenter))
      return { cloud: "gcp", region: r, zone: datacenter };
    if (datacenter === undefined && region === r) return { cloud: "gcp", region: r };
  }
  return undefined;
}
