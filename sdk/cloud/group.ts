import type * as pulumi from "@pulumi/pulumi";
import type { CloudCatalogInput } from "./catalog";
import { type Problem, isRecord, names, show } from "./problems";

/** The machine sizes of GCI, the same names as the core VirtualMachineGroup's. */
export const MACHINE_SIZE_NAMES = ["nano", "micro", "small", "medium", "large"] as const;

/** A machine size name. */
export type MachineSizeName = (typeof MACHINE_SIZE_NAMES)[number];

/**
 * The EC2 instance type of each machine size: the burstable t3 family, one step per size
 * (vCPUs / memory: nano 2 / 0.5 GiB, micro 2 / 1 GiB, small 2 / 2 GiB, medium 2 / 4 GiB,
 * large 2 / 8 GiB). Each has at least the memory of the same GCI size.
 */
export const AWS_INSTANCE_TYPES: Readonly<Record<MachineSizeName, string>> = {
  nano: "t3.nano",
  micro: "t3.micro",
  small: "t3.small",
  medium: "t3.medium",
  large: "t3.large",
};

/**
 * The Compute Engine machine type of each machine size: the e2 family (vCPUs / memory:
 * e2-micro 2 shared / 1 GB, e2-small 2 shared / 2 GB, e2-medium 2 shared / 4 GB,
 * e2-standard-2 2 / 8 GB). e2 has nothing below e2-micro, so nano and micro share it.
 */
export const GCP_MACHINE_TYPES: Readonly<Record<MachineSizeName, string>> = {
  nano: "e2-micro",
  micro: "e2-micro",
  small: "e2-small",
  medium: "e2-medium",
  large: "e2-standard-2",
};

/**
 * The most instances one cloud group declares. Each is its own resource in every preview,
 * and default cloud quotas stop far below; larger fleets are several groups.
 */
export const MAX_CLOUD_COUNT = 100;

/** How long an image copy may take before `pulumi up` gives up on it, unless a group says otherwise. */
export const DEFAULT_COPY_TIMEOUT = "60m";
const MIN_COPY_SECONDS = 60;
const MAX_COPY_SECONDS = 24 * 3600;

/** The arguments every cloud VirtualMachineGroup shares with the core one, and the cloud options. */
export interface CloudGroupArgs<TImage> {
  /** The cloud catalog, or the platform stack's catalog output (plain value) holding it under `clouds`. */
  readonly catalog: CloudCatalogInput;
  /** The image to run. */
  readonly image: TImage;
  /** The cloud region to run in. Give this or `datacenter`. */
  readonly region?: string;
  /** A datacenter of the catalog (an AWS availability zone, a GCP zone). Give this or `region`. */
  readonly datacenter?: string;
  /** How many VMs, 1 to MAX_CLOUD_COUNT. Changing it adds or removes instances; the others stay. */
  readonly count: number;
  /**
   * The size of each VM, mapped to an instance type per cloud (AWS_INSTANCE_TYPES, GCP_MACHINE_TYPES).
   * @default "micro"
   */
  readonly machineSize?: MachineSizeName;
  /**
   * TCP ports to open on every VM; each VM's `addresses` lists host:port for each.
   * @default [] (nothing opened)
   */
  readonly ports?: readonly number[];
  /**
   * Who may reach `ports`, as IPv4 CIDR blocks.
   * @default ["0.0.0.0/0"] (anyone)
   */
  readonly allowedCidrs?: readonly string[];
  /**
   * A script each VM runs at first boot (AWS user data, GCP startup script).
   * @default none
   */
  readonly startupScript?: pulumi.Input<string>;
  /**
   * Tags (GCP: labels) on everything the group creates.
   * @default {}
   */
  readonly tags?: Readonly<Record<string, string>>;
  /**
   * Give an image copy the source image's tags (GCP: labels) as well as `tags`.
   * @default true
   */
  readonly copyTags?: boolean;
  /**
   * Keep an image copy in the cloud when the group is deleted or replaced (Pulumi's
   * `retainOnDelete`), so launch templates or other stacks using it keep working. A kept
   * copy costs storage until you delete it; list it in the catalog to reuse it.
   * @default false
   */
  readonly retainCopyOnDelete?: boolean;
  /**
   * A KMS key per region, for image copies into that region (and, on AWS, the VMs' root
   * volumes). AWS: a key ARN in that region; GCP: a crypto key path.
   * @default {} (the cloud's default encryption)
   */
  readonly kmsKeyIds?: Readonly<Record<string, pulumi.Input<string>>>;
  /**
   * How long an image copy may take before `pulumi up` fails with the copy named (a Go
   * duration such as "90m" or "2h30m", from 1m to 24h).
   * @default DEFAULT_COPY_TIMEOUT ("60m")
   */
  readonly copyTimeout?: string;
}

/** Where an image copy happened: from which region (or storage location) to which, and the ids. */
export interface CloudTransfer {
  readonly image: string;
  readonly source: string;
  readonly destination: string;
  readonly sourceImageId: string;
  readonly imageId: string;
}

/** Seconds in a Go duration of hours, minutes and seconds ("1h30m"), or undefined if it is not one. */
export function durationSeconds(value: string): number | undefined {
  const m = /^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(value);
  if (!m || value === "") return undefined;
  return Number(m[1] ?? 0) * 3600 + Number(m[2] ?? 0) * 60 + Number(m[3] ?? 0);
}

const CIDR = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/;

function isCidr(value: unknown): boolean {
  const m = typeof value === "string" ? CIDR.exec(value) : null;
  return !!m && m.slice(1, 5).every((o) => Number(o) <= 255) && Number(m[5]) <= 32;
}

/**
 * Every problem with the arguments all cloud groups share (count, size, ports, CIDRs,
 * copy timeout, placement given once). Pure; `sizes` is the cloud's machine-type table.
 */
export function commonGroupProblems(
  args: CloudGroupArgs<unknown>,
  sizes: Readonly<Record<MachineSizeName, string>>,
): Problem[] {
  const out: Problem[] = [];
  const add = (property: string, reason: string): void => {
    out.push({ property, reason });
  };
  if (args.region === undefined && args.datacenter === undefined) {
    add("region", "is missing: give the group a region (or a datacenter) of the catalog");
  } else if (args.region !== undefined && args.datacenter !== undefined) {
    add(
      "datacenter",
      `is ${show(args.datacenter)} while region is ${show(args.region)}: give one of the two`,
    );
  }
  if (
    typeof args.count !== "number" ||
    !Number.isInteger(args.count) ||
    args.count < 1 ||
    args.count > MAX_CLOUD_COUNT
  ) {
    add(
      "count",
      `${show(args.count)} is out of range: ask for 1 to ${MAX_CLOUD_COUNT} VMs (a plain whole number; ` +
        `split larger fleets into several groups)`,
    );
  }
  const size = args.machineSize ?? "micro";
  if (!(MACHINE_SIZE_NAMES as readonly string[]).includes(size)) {
    const known = MACHINE_SIZE_NAMES.map((n) => `${n} (${sizes[n]})`).join(", ");
    add("machineSize", `${show(size)} is unknown: use one of ${known}`);
  }
  if (args.ports !== undefined) {
    if (!Array.isArray(args.ports)) {
      add("ports", `is ${show(args.ports)}, expected a list of TCP ports like [80, 443]`);
    } else {
      const seen = new Set<number>();
      args.ports.forEach((p, i) => {
        if (typeof p !== "number" || !Number.isInteger(p) || p < 1 || p > 65535) {
          add(`ports[${i}]`, `${show(p)} is not a TCP port: use a whole number from 1 to 65535`);
        } else if (seen.has(p)) {
          add(`ports[${i}]`, `port ${p} is listed twice: list each port once`);
        } else seen.add(p);
      });
    }
  }
  if (args.allowedCidrs !== undefined) {
    if (!Array.isArray(args.allowedCidrs) || args.allowedCidrs.length === 0) {
      add("allowedCidrs", `is ${show(args.allowedCidrs)}, expected a non-empty list like ["203.0.113.0/24"]`);
    } else {
      args.allowedCidrs.forEach((c, i) => {
        if (!isCidr(c))
          add(`allowedCidrs[${i}]`, `${show(c)} is not an IPv4 CIDR block like "203.0.113.0/24"`);
      });
    }
  }
  if (args.copyTimeout !== undefined) {
    const s = typeof args.copyTimeout === "string" ? durationSeconds(args.copyTimeout) : undefined;
    if (s === undefined) {
      add("copyTimeout", `${show(args.copyTimeout)} is not a duration: write it like "90m" or "2h30m"`);
    } else if (s < MIN_COPY_SECONDS || s > MAX_COPY_SECONDS) {
      add("copyTimeout", `${show(args.copyTimeout)} is out of range: allow an image copy from 1m to 24h`);
    }
  }
  if (args.tags !== undefined && !isRecord(args.tags)) {
    add("tags", `is ${show(args.tags)}, expected an object of string values`);
  } else {
    for (const [k, v] of Object.entries(args.tags ?? {})) {
      if (typeof v !== "string") add(`tags[${JSON.stringify(k)}]`, `is ${show(v)}, expected a string`);
    }
  }
  if (args.kmsKeyIds !== undefined && !isRecord(args.kmsKeyIds)) {
    add("kmsKeyIds", `is ${show(args.kmsKeyIds)}, expected an object of region to key`);
  }
  return out;
}

const article = (cloud: string): string => (/^[AEIOU]/.test(cloud) ? "an" : "a");

/** The problem of a region the catalog does not list, naming the ones it does. @internal */
export function unknownRegion(
  property: string,
  region: unknown,
  cloud: string,
  known: Iterable<string>,
): Problem {
  return {
    property,
    reason:
      `${show(region)} is not ${article(cloud)} ${cloud} region of the catalog; it lists ${names(known)}: ` +
      `use one of them, or add the region under clouds.${cloud.toLowerCase()}.regions of the platform stack's catalog output`,
  };
}

/** The problem of a datacenter the catalog does not list, naming the ones it does. @internal */
export function unknownDatacenter(
  property: string,
  datacenter: unknown,
  cloud: string,
  known: Iterable<string>,
): Problem {
  return {
    property,
    reason:
      `${show(datacenter)} is not ${article(cloud)} ${cloud} datacenter of the catalog; it lists ${names(known)}: ` +
      `use one of them, or place the group by region`,
  };
}
