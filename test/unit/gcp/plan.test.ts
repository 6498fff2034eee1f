/**
 * The pure validators and the placement rule of the GCP components, tested directly
 * (no mocks, no resources): every problem is returned at once, with the bad value quoted.
 */

import {
  type CloudCatalog,
  GCP_MACHINE_TYPES,
  MACHINE_SIZE_NAMES,
  cloudCatalogProblems,
} from "../../../sdk/cloud";
import { imageIdProblems, planVirtualMachineGroup, virtualMachineGroupProblems } from "../../../sdk/gcp";
import type { VirtualMachineGroupArgs } from "../../../sdk/gcp";
import { gcpName } from "../../../sdk/gcp/plan";

const P = "projects/gci-test-project/global/images";
const catalog: CloudCatalog = {
  gcp: {
    regions: {
      "us-central1": { zones: ["us-central1-a"], storageLocation: "us", images: { web: `${P}/web-us` } },
      "us-east1": { zones: ["us-east1-b"], storageLocation: "us" },
      "europe-west1": { zones: ["europe-west1-b"], storageLocation: "eu" },
      "europe-west4": { zones: ["europe-west4-a"], storageLocation: "eu" },
      "asia-east1": { zones: ["asia-east1-a"] },
    },
  },
};

const args = (over: Partial<VirtualMachineGroupArgs> = {}): VirtualMachineGroupArgs => ({
  catalog,
  image: { name: "web", region: "us-central1" },
  region: "europe-west1",
  count: 1,
  ...over,
});

describe("the placement rule", () => {
  it("copies into a storage location that holds no listed image, and only there", () => {
    const where = (region: string): string => {
      const plan = planVirtualMachineGroup(args({ region }));
      return plan.source.kind === "copy"
        ? `copy ${plan.source.sourceLocation}->${plan.storageLocation}`
        : "present";
    };
    expect(where("us-central1")).toBe("present"); // home
    expect(where("us-east1")).toBe("present"); // same "us" multi-region
    expect(where("europe-west1")).toBe("copy us->eu");
    expect(where("europe-west4")).toBe("copy us->eu");
    expect(where("asia-east1")).toBe("copy us->asia-east1");
  });

  it("uses an image listed in another region of the same storage location", () => {
    const listed: CloudCatalog = {
      gcp: {
        regions: {
          ...catalog.gcp?.regions,
          "europe-west4": {
            zones: ["europe-west4-a"],
            storageLocation: "eu",
            images: { web: `${P}/web-eu` },
          },
        },
      },
    };
    const plan = planVirtualMachineGroup(args({ catalog: listed, region: "europe-west1" }));
    expect(plan.source).toEqual({ kind: "present", imageId: `${P}/web-eu` });
  });

  it("maps every machine size to its e2 machine type, micro by default", () => {
    expect(planVirtualMachineGroup(args()).machineType).toBe("e2-micro");
    for (const size of MACHINE_SIZE_NAMES) {
      expect(planVirtualMachineGroup(args({ machineSize: size })).machineType).toBe(GCP_MACHINE_TYPES[size]);
    }
  });

  it("places by zone, or in the region's first zone", () => {
    expect(planVirtualMachineGroup(args()).zone).toBe("europe-west1-b");
    expect(planVirtualMachineGroup(args({ region: undefined, datacenter: "europe-west4-a" }))).toMatchObject({
      region: "europe-west4",
      zone: "europe-west4-a",
    });
  });
});

describe("virtualMachineGroupProblems", () => {
  it("returns every problem at once", () => {
    const problems = virtualMachineGroupProblems(
      args({
        region: "us-east-1",
        count: 500,
        machineSize: "tiny" as never,
        copyTimeout: "30s",
        tags: { a: "B" },
      }),
    );
    expect(problems.map((p) => p.property).sort()).toEqual([
      "copyTimeout",
      "count",
      "machineSize",
      "region",
      'tags["a"]',
    ]);
    expect(problems.find((p) => p.property === "region")?.reason).toContain(
      '"us-east-1" is not a GCP region',
    );
  });

  it("refuses an image the catalog stores elsewhere, or another image under a listed name", () => {
    expect(imageIdProblems(catalog, "web", "us-east1", `${P}/web-us`, "imageId")).toEqual([]);
    expect(imageIdProblems(catalog, "web", "asia-east1", `${P}/web-us`, "imageId")[0].reason).toContain(
      'is stored in "us" per the catalog, not in "asia-east1"',
    );
    expect(imageIdProblems(catalog, "web", "us-east1", `${P}/web-v2`, "imageId")[0].reason).toContain(
      `the catalog lists image "web" in "us" as "${P}/web-us"`,
    );
    expect(imageIdProblems(catalog, "web", "us-east1", "web-us", "imageId")[0].reason).toContain(
      '"web-us" is not an image path',
    );
  });
});

describe("the cloud catalog (GCP part)", () => {
  it("returns every problem with the path of the bad value", () => {
    const problems = cloudCatalogProblems({
      gcp: {
        project: "X",
        regions: {
          "us-central1": { zones: [], storageLocation: "mars" },
          "europe-west1": { zones: ["europe-west2-b"], images: { web: "web" } },
          "asia-east1": { zones: ["asia-east1-a"], images: { web: `${P}/web-us` } },
          "us-east1": { zones: ["us-east1-b"], storageLocation: "us", images: { web: `${P}/web-us` } },
        },
      },
    });
    expect(problems.map((p) => p.property)).toEqual([
      "clouds.gcp.project",
      'clouds.gcp.regions["us-central1"].zones',
      'clouds.gcp.regions["us-central1"].storageLocation',
      'clouds.gcp.regions["europe-west1"].zones[0]',
      'clouds.gcp.regions["europe-west1"].images["web"]',
      'clouds.gcp.regions["us-east1"].images["web"]',
    ]);
    expect(problems[5].reason).toContain("an image has one storage location");
  });
});

describe("gcpName", () => {
  it("makes names GCP accepts", () => {
    expect(gcpName("Web.EU_1")).toBe("web-eu-1");
    expect(gcpName("1st")).toBe("g1st");
    expect(gcpName("a".repeat(80))).toHaveLength(50);
  });
});
