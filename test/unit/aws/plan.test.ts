/**
 * The pure validators and the placement rule of the AWS components, tested directly
 * (no mocks, no resources): every problem is returned at once, with the bad value quoted.
 */

import * as pulumi from "@pulumi/pulumi";
import { amiIdProblems, planVirtualMachineGroup, virtualMachineGroupProblems } from "../../../sdk/aws";
import type { VirtualMachineGroupArgs } from "../../../sdk/aws";
import {
  AWS_INSTANCE_TYPES,
  type CloudCatalog,
  CloudArgsError,
  MACHINE_SIZE_NAMES,
  cloudCatalogFromStackOutput,
  cloudCatalogProblems,
  cloudPlacement,
  durationSeconds,
  parseCloudCatalog,
} from "../../../sdk/cloud";

const HOME = "ami-0123456789abcdef0";
const OTHER = "ami-0fedcba9876543210";
const REGIONS = ["ap-southeast-2", "eu-west-1", "us-east-1"] as const;

const catalog: CloudCatalog = {
  aws: {
    regions: {
      "us-east-1": { availabilityZones: ["us-east-1a"], amis: { web: HOME } },
      "eu-west-1": {},
      "ap-southeast-2": { amis: { web: OTHER } },
    },
  },
  gcp: { regions: { "europe-west1": { zones: ["europe-west1-b"] } } },
};

const args = (over: Partial<VirtualMachineGroupArgs> = {}): VirtualMachineGroupArgs => ({
  catalog,
  image: { name: "web", region: "us-east-1", amiId: HOME },
  region: "eu-west-1",
  count: 1,
  ...over,
});

describe("the placement rule", () => {
  it("copies exactly when neither the catalog lists the AMI in the region nor the region is home", () => {
    // Every catalog where web is listed in some subset of the non-home regions, every region.
    for (let mask = 0; mask < 4; mask++) {
      const listed = ["eu-west-1", "ap-southeast-2"].filter((_, i) => mask & (1 << i));
      const regions = Object.fromEntries(
        REGIONS.map((r, i) => [
          r,
          r === "us-east-1" || listed.includes(r) ? { amis: { web: `ami-0${String(i).repeat(16)}` } } : {},
        ]),
      );
      const c: CloudCatalog = { aws: { regions } };
      const home = regions["us-east-1"].amis?.web as string;
      for (const region of REGIONS) {
        const plan = planVirtualMachineGroup({
          catalog: c,
          image: { name: "web", region: "us-east-1" },
          region,
          count: 1,
        });
        const shouldCopy = region !== "us-east-1" && !listed.includes(region);
        expect(plan.ami.kind).toBe(shouldCopy ? "copy" : "present");
        if (plan.ami.kind === "copy")
          expect(plan.ami).toEqual({ kind: "copy", sourceRegion: "us-east-1", sourceAmiId: home });
        else expect(plan.ami.amiId).toBe(region === "us-east-1" ? home : regions[region].amis?.web);
      }
    }
  });

  it("maps every machine size to its t3 instance type, micro by default", () => {
    expect(planVirtualMachineGroup(args()).instanceType).toBe("t3.micro");
    for (const size of MACHINE_SIZE_NAMES) {
      expect(planVirtualMachineGroup(args({ machineSize: size })).instanceType).toBe(
        AWS_INSTANCE_TYPES[size],
      );
    }
    expect(AWS_INSTANCE_TYPES).toEqual({
      nano: "t3.nano",
      micro: "t3.micro",
      small: "t3.small",
      medium: "t3.medium",
      large: "t3.large",
    });
  });

  it("skips an AMI id unknown until deployment instead of refusing it", () => {
    const unknown = Promise.resolve(HOME);
    expect(
      virtualMachineGroupProblems(args({ image: { name: "web", region: "us-east-1", amiId: unknown } })),
    ).toEqual([]);
    expect(
      planVirtualMachineGroup(args({ image: { name: "web", region: "us-east-1", amiId: unknown } })).ami,
    ).toEqual({
      kind: "copy",
      sourceRegion: "us-east-1",
      sourceAmiId: unknown,
    });
  });

  it("takes the KMS key of the group's region only", () => {
    const key = "arn:aws:kms:eu-west-1:111122223333:alias/gci";
    const plan = planVirtualMachineGroup(args({ encrypted: true, kmsKeyIds: { "eu-west-1": key } }));
    expect(plan).toMatchObject({ encrypted: true, kmsKeyId: key });
    expect(
      planVirtualMachineGroup(args({ region: "us-east-1", encrypted: true, kmsKeyIds: { "eu-west-1": key } }))
        .kmsKeyId,
    ).toBeUndefined();
  });
});

describe("virtualMachineGroupProblems", () => {
  it("is empty for good arguments", () => {
    expect(
      virtualMachineGroupProblems(args({ ports: [80], allowedCidrs: ["10.0.0.0/8"], copyTimeout: "1h30m" })),
    ).toEqual([]);
  });

  it("returns every problem at once, each naming the property and quoting the value", () => {
    const problems = virtualMachineGroupProblems(
      args({
        region: "mars-1",
        count: 0,
        machineSize: "xl" as never,
        ports: [80, 80, 70000],
        allowedCidrs: ["10.0.0.0/33"],
        tags: { "aws:owner": "me" },
        kmsKeyIds: { "eu-west-1": "not-an-arn" },
      }),
    );
    const byProperty = Object.fromEntries(problems.map((p) => [p.property, p.reason]));
    expect(Object.keys(byProperty).sort()).toEqual([
      "allowedCidrs[0]",
      "count",
      "kmsKeyIds",
      'kmsKeyIds["eu-west-1"]',
      "machineSize",
      "ports[1]",
      "ports[2]",
      "region",
      'tags["aws:owner"]',
    ]);
    expect(byProperty.region).toContain('"mars-1" is not an AWS region of the catalog');
    expect(byProperty.region).toContain('"ap-southeast-2", "eu-west-1", "us-east-1"');
    expect(byProperty.count).toContain("0 is out of range");
    expect(byProperty["ports[1]"]).toContain("port 80 is listed twice");
    expect(byProperty["ports[2]"]).toContain("70000 is not a TCP port");
    expect(byProperty["allowedCidrs[0]"]).toContain('"10.0.0.0/33" is not an IPv4 CIDR block');
    expect(byProperty.kmsKeyIds).toContain("while encrypted is false: set encrypted: true");
    expect(byProperty['kmsKeyIds["eu-west-1"]']).toContain('"not-an-arn" is not a KMS key ARN');
    expect(byProperty['tags["aws:owner"]']).toContain('starts with "aws:"');
  });

  it("refuses a region and a datacenter together, and neither", () => {
    expect(virtualMachineGroupProblems(args({ datacenter: "us-east-1a" })).map((p) => p.property)).toEqual([
      "datacenter",
    ]);
    expect(virtualMachineGroupProblems(args({ region: undefined }))[0].reason).toMatch(
      /is missing: give the group a region/,
    );
  });

  it("refuses an image in no region of the catalog, and an unknown home region", () => {
    expect(virtualMachineGroupProblems(args({ image: { name: "api" } }))[0]).toEqual({
      property: "image",
      reason: expect.stringContaining('image "api" is in no AWS region of the catalog'),
    });
    expect(
      virtualMachineGroupProblems(args({ image: { name: "web", region: "eu-central-1" } }))[0].property,
    ).toBe("image.region");
    expect(virtualMachineGroupProblems(args({ image: { name: "web", region: "eu-west-1" } }))[0]).toEqual({
      property: "image.amiId",
      reason: expect.stringContaining(
        'the catalog lists no AMI for image "web" in its home region "eu-west-1"',
      ),
    });
  });

  it("reports a malformed catalog before anything else", () => {
    const bad = { aws: { regions: { "us-east-1": { amis: { web: "ami-1" } } } } } as unknown as CloudCatalog;
    const problems = virtualMachineGroupProblems(args({ catalog: bad }));
    expect(problems[0]).toEqual({
      property: 'catalog.aws.regions["us-east-1"].amis["web"]',
      reason: expect.stringContaining('is "ami-1", not an AMI id'),
    });
  });

  it("takes the platform stack's whole catalog output, and says why an Output will not do", () => {
    const output = {
      schema: "gci.catalog/v1",
      catalog: "sqlite:/c.db",
      regions: ["us"],
      datacenters: [],
      clouds: catalog,
    };
    expect(planVirtualMachineGroup(args({ catalog: output }))).toEqual(planVirtualMachineGroup(args()));
    expect(
      virtualMachineGroupProblems(args({ catalog: { ...output, clouds: { aws: {} as never } } }))[0].property,
    ).toBe("catalog.clouds.aws.regions");
    expect(virtualMachineGroupProblems(args({ catalog: pulumi.output(catalog) as never }))[0]).toEqual({
      property: "catalog",
      reason: expect.stringContaining("is an Output or a Promise: cloud components decide at construction"),
    });
    expect(
      virtualMachineGroupProblems(args({ catalog: { [Symbol.for("gci:Catalog")]: true } as never }))[0]
        .reason,
    ).toContain("is a gci.Catalog");
  });

  it("throws a CloudArgsError naming the group with the same problems", () => {
    expect(() => planVirtualMachineGroup(args({ count: 1000 }), "web-eu")).toThrow(
      /aws.VirtualMachineGroup "web-eu" has invalid arguments: 1 problem\n {2}- count: 1000 is out of range/,
    );
  });
});

describe("amiIdProblems", () => {
  it("accepts the home AMI and an AMI the catalog does not list", () => {
    expect(amiIdProblems(catalog, "web", "us-east-1", HOME, "amiId")).toEqual([]);
    expect(amiIdProblems(catalog, "api", "eu-west-1", "ami-12345678", "amiId")).toEqual([]);
  });

  it("refuses an AMI the catalog lists in another region", () => {
    expect(amiIdProblems(catalog, "web", "us-east-1", OTHER, "amiId")).toEqual([
      {
        property: "amiId",
        reason: expect.stringContaining(
          'AMI "ami-0fedcba9876543210" is in region "ap-southeast-2" per the catalog, not in the image\'s home region "us-east-1"',
        ),
      },
    ]);
  });

  it("refuses another AMI under a name the catalog lists in the home region", () => {
    expect(amiIdProblems(catalog, "web", "us-east-1", "ami-99999999", "amiId")[0].reason).toContain(
      'the catalog lists image "web" in "us-east-1" as "ami-0123456789abcdef0", not "ami-99999999"',
    );
  });

  it("refuses a malformed id", () => {
    for (const bad of ["ami-123", "AMI-0123456789abcdef0", "ami-0123456789ABCDEF0", "i-0123456789abcdef0"]) {
      expect(amiIdProblems(catalog, "web", "us-east-1", bad, "amiId")[0].reason).toContain(
        `"${bad}" is not an AMI id`,
      );
    }
  });
});

describe("the cloud catalog (AWS part)", () => {
  it("accepts a good catalog", () => {
    expect(cloudCatalogProblems(catalog)).toEqual([]);
    expect(parseCloudCatalog(catalog)).toBe(catalog);
  });

  it("returns every problem with the path of the bad value", () => {
    const problems = cloudCatalogProblems({
      aws: {
        regions: {
          "us-east": {},
          "eu-west-1": { availabilityZones: ["us-east-1a"], amis: { web: HOME } },
          "us-east-1": { amis: { web: HOME, "bad name!": "ami-12345678" } },
        },
      },
      azure: {}, // another cloud, from a newer platform stack: ignored
    });
    expect(problems.map((p) => p.property)).toEqual([
      'clouds.aws.regions["us-east"]',
      'clouds.aws.regions["eu-west-1"].availabilityZones[0]',
      'clouds.aws.regions["us-east-1"].amis["web"]',
      'clouds.aws.regions["us-east-1"].amis["bad name!"]',
    ]);
    expect(problems[1].reason).toBe(
      '"us-east-1a" is not an availability zone of eu-west-1, e.g. "eu-west-1a"',
    );
    expect(problems[2].reason).toContain("also listed in eu-west-1; an AMI id belongs to one region");
  });

  it("throws every problem from parseCloudCatalog and reads the platform stack output", () => {
    expect(() => parseCloudCatalog({ aws: { regions: [] } })).toThrow(CloudArgsError);
    expect(() => parseCloudCatalog("x")).toThrow(/the cloud catalog is malformed: 1 problem/);
    const output = {
      schema: "gci.catalog/v1",
      catalog: "sqlite:/c.db",
      regions: ["us"],
      datacenters: [],
      clouds: catalog,
    };
    expect(cloudCatalogFromStackOutput(output)).toBe(catalog);
    expect(cloudCatalogFromStackOutput({ schema: "gci.catalog/v1" })).toEqual({});
    expect(() => cloudCatalogFromStackOutput({ clouds: { aws: 1 } })).toThrow(
      /catalog\.clouds\.aws\.regions: is 1/,
    );
  });

  it("says which cloud a region or datacenter is on, and undefined for a GCI one", () => {
    expect(cloudPlacement(catalog, { region: "eu-west-1" })).toEqual({ cloud: "aws", region: "eu-west-1" });
    expect(cloudPlacement(catalog, { datacenter: "us-east-1a" })).toEqual({
      cloud: "aws",
      region: "us-east-1",
      zone: "us-east-1a",
    });
    expect(cloudPlacement(catalog, { datacenter: "europe-west1-b" })).toEqual({
      cloud: "gcp",
      region: "europe-west1",
      zone: "europe-west1-b",
    });
    expect(cloudPlacement(catalog, { region: "eu" })).toBeUndefined();
  });

  it("reads Go durations", () => {
    expect(durationSeconds("90m")).toBe(5400);
    expect(durationSeconds("1h30m15s")).toBe(5415);
    expect(durationSeconds("")).toBeUndefined();
    expect(durationSeconds("1d")).toBeUndefined();
  });
});
