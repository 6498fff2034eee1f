/**
 * gcp.Image and gcp.VirtualMachineGroup through Pulumi's mocks (no cloud is reachable here;
 * see ../aws/registrations.ts): every registration is recorded and its inputs asserted.
 */

import { createHash } from "crypto";
import type { CloudCatalog } from "../../../sdk/cloud";
import { CloudArgsError } from "../../../sdk/cloud";
import * as gcp from "../../../sdk/gcp";
import { type Registration, recordRegistrations, valueOf } from "../aws/registrations";

const PROJECT = "gci-test-project";
const HOME = `projects/${PROJECT}/global/images/web-us`;
const ASIA = `projects/${PROJECT}/global/images/web-asia`;
const EU_KEY = `projects/${PROJECT}/locations/europe-west1/keyRings/gci/cryptoKeys/images`;

/**
 * web is stored in the "us" multi-region (home us-central1, shared by us-east1) and in
 * asia-east1; europe-west1 stores images in its own region and lacks it.
 */
const catalog: CloudCatalog = {
  gcp: {
    project: PROJECT,
    regions: {
      "us-central1": {
        zones: ["us-central1-a", "us-central1-b"],
        storageLocation: "us",
        images: { web: HOME },
      },
      "us-east1": { zones: ["us-east1-b"], storageLocation: "us" },
      "europe-west1": { zones: ["europe-west1-b", "europe-west1-c"] },
      "asia-east1": { zones: ["asia-east1-a"], images: { web: ASIA } },
    },
  },
};

const hex = (s: string, n: number): string => createHash("sha256").update(s).digest("hex").slice(0, n);

let registered: Registration[];
beforeAll(async () => {
  registered = await recordRegistrations((args) => {
    switch (args.type) {
      case "gcp:compute/image:Image":
        return { id: `projects/${PROJECT}/global/images/${args.name}-${hex(args.name, 7)}` };
      case "gcp:storage/bucket:Bucket":
        return { state: { name: `${args.name}-${hex(args.name, 7)}` } };
      case "gcp:compute/instance:Instance": {
        const natIp = `198.51.100.${parseInt(hex(args.name, 2), 16) % 250}`;
        const nics = args.inputs.networkInterfaces as { accessConfigs?: object[] }[];
        return {
          id: `projects/${PROJECT}/zones/${args.inputs.zone}/instances/${args.name}-${hex(args.name, 7)}`,
          state: {
            networkInterfaces: nics.map((n) => ({ ...n, networkIp: "10.1.0.2", accessConfigs: [{ natIp }] })),
          },
        };
      }
      default:
        return {};
    }
  });
});

function of(name: string, type?: string): Registration[] {
  return registered.filter(
    (r) => (r.name === name || r.name.startsWith(`${name}-`)) && (type === undefined || r.type === type),
  );
}

function one(name: string, type: string): Registration {
  const found = of(name, type);
  expect(found).toHaveLength(1);
  return found[0];
}

const IMAGE = "gcp:compute/image:Image";
const INSTANCE = "gcp:compute/instance:Instance";
const web = { name: "web", region: "us-central1", imageId: HOME, tags: { team: "platform" } };

describe("placement: a copy exactly where the catalog lacks the image's storage location", () => {
  let groups: gcp.VirtualMachineGroup[];
  beforeAll(async () => {
    groups = ["us-central1", "us-east1", "europe-west1", "asia-east1"].map(
      (region) =>
        new gcp.VirtualMachineGroup(`place-${region}`, {
          catalog,
          image: web,
          region,
          count: 2,
          machineSize: "small",
        }),
    );
    await Promise.all(groups.map((g) => valueOf(g.vmIds)));
  });

  it("declares one image copy, into europe-west1, from the home image", () => {
    const copies = registered.filter((r) => r.type === IMAGE && r.name.startsWith("place-"));
    expect(copies.map((c) => c.name)).toEqual(["place-europe-west1-copy-europe-west1"]);
    expect(copies[0].inputs).toMatchObject({
      sourceImage: HOME,
      storageLocations: ["europe-west1"],
      project: PROJECT,
    });
  });

  it("boots the europe-west1 VMs from the copy, in the region's first zone", () => {
    const copy = one("place-europe-west1-copy", IMAGE);
    const vms = of("place-europe-west1", INSTANCE);
    expect(vms).toHaveLength(2);
    for (const vm of vms) {
      expect(vm.inputs.bootDisk).toEqual({ initializeParams: { image: copy.id } });
      expect(vm.inputs).toMatchObject({ zone: "europe-west1-b", machineType: "e2-small", project: PROJECT });
    }
  });

  it("boots from the image already stored where the region stores images", () => {
    const imageOf = (group: string): string[] =>
      of(group, INSTANCE).map((vm) => vm.inputs.bootDisk.initializeParams.image);
    expect(imageOf("place-us-central1")).toEqual([HOME, HOME]);
    expect(imageOf("place-us-east1")).toEqual([HOME, HOME]); // the "us" multi-region holds it
    expect(imageOf("place-asia-east1")).toEqual([ASIA, ASIA]);
    expect(of("place-us-east1", INSTANCE)[0].inputs.zone).toBe("us-east1-b");
  });

  it("outputs the zone, the VM ids, the image and the transfer", async () => {
    const eu = groups[2];
    const copy = one("place-europe-west1-copy", IMAGE);
    expect(await valueOf(eu.region)).toBe("europe-west1");
    expect(await valueOf(eu.datacenter)).toBe("europe-west1-b");
    expect(await valueOf(eu.vmIds)).toEqual(of("place-europe-west1", INSTANCE).map((r) => r.id));
    expect(await valueOf(eu.imageId)).toBe(copy.id);
    expect(await valueOf(eu.transfer)).toEqual({
      image: "web",
      source: "us",
      destination: "europe-west1",
      sourceImageId: HOME,
      imageId: copy.id,
    });
    expect(await valueOf(groups[1].transfer)).toBeNull();
  });
});

describe("a group placed on a datacenter, with ports", () => {
  it("runs in that zone, opens the ports to its VMs' network tag, and lists host:port", async () => {
    const g = new gcp.VirtualMachineGroup("dc", {
      catalog,
      image: web,
      datacenter: "europe-west1-c",
      count: 2,
      ports: [8080],
      allowedCidrs: ["203.0.113.0/24"],
      startupScript: "#!/bin/sh\necho hi",
    });
    const addresses = await valueOf(g.addresses);
    const vms = of("dc", INSTANCE);
    expect(vms.map((vm) => vm.inputs.zone)).toEqual(["europe-west1-c", "europe-west1-c"]);
    expect(vms[0].inputs).toMatchObject({
      tags: ["gci-dc"],
      metadataStartupScript: "#!/bin/sh\necho hi",
      networkInterfaces: [{ network: "default", accessConfigs: [{}] }],
    });
    const fw = one("dc", "gcp:compute/firewall:Firewall");
    expect(fw.inputs).toMatchObject({
      network: "default",
      allows: [{ protocol: "tcp", ports: ["8080"] }],
      sourceRanges: ["203.0.113.0/24"],
      targetTags: ["gci-dc"],
    });
    expect(addresses).toHaveLength(2);
    for (const a of addresses) expect(a).toMatch(/^198\.51\.100\.\d+:8080$/);
    expect(await valueOf(g.urls)).toEqual(addresses.map((a) => `http://${a}`));
  });
});

describe("copy options reach the image copy", () => {
  it("by default: not retained, labels copied, a 60m create timeout, Google-managed encryption", async () => {
    const g = new gcp.VirtualMachineGroup("defaults", {
      catalog,
      image: web,
      region: "europe-west1",
      count: 1,
    });
    await valueOf(g.vmIds);
    const copy = one("defaults-copy", IMAGE);
    expect(copy.retainOnDelete).toBeFalsy();
    expect(copy.customTimeouts?.create).toBe("60m");
    expect(copy.inputs.imageEncryptionKey).toBeUndefined();
    expect(copy.inputs.labels).toEqual({ team: "platform", "gci-group": "defaults", "gci-image": "web" });
  });

  it("retainCopyOnDelete, the region's KMS key, copyTags off, copyTimeout", async () => {
    const g = new gcp.VirtualMachineGroup("options", {
      catalog,
      image: web,
      region: "europe-west1",
      count: 1,
      retainCopyOnDelete: true,
      kmsKeyIds: { "europe-west1": EU_KEY },
      copyTags: false,
      tags: { env: "prod" },
      copyTimeout: "3h",
    });
    await valueOf(g.vmIds);
    const copy = one("options-copy", IMAGE);
    expect(copy.retainOnDelete).toBe(true);
    expect(copy.customTimeouts?.create).toBe("3h");
    expect(copy.inputs.imageEncryptionKey).toEqual({ kmsKeySelfLink: EU_KEY });
    expect(copy.inputs.labels).toEqual({ env: "prod", "gci-group": "options", "gci-image": "web" });
    expect(one("options-0", INSTANCE).retainOnDelete).toBeFalsy();
  });
});

describe("gcp.Image", () => {
  it("registers an existing image without creating anything", async () => {
    const img = new gcp.Image("existing", {
      catalog,
      region: "us-central1",
      name: "web",
      source: { imageId: HOME },
    });
    expect(await valueOf(img.imageId)).toBe(HOME);
    await valueOf(img.urn);
    expect(of("existing").map((r) => r.type)).toEqual(["gci:gcp:Image"]);
  });

  it("makes an image from another one in the home region's storage location", async () => {
    const img = new gcp.Image("debian", {
      catalog,
      region: "europe-west1",
      source: { sourceImage: "projects/debian-cloud/global/images/family/debian-12" },
    });
    const id = await valueOf(img.imageId);
    const image = one("debian", IMAGE);
    expect(image.inputs).toMatchObject({
      sourceImage: "projects/debian-cloud/global/images/family/debian-12",
      storageLocations: ["europe-west1"],
      project: PROJECT,
    });
    expect(id).toBe(image.id);
    expect(img.storageLocation).toBe("europe-west1");
  });

  it("imports a disk through a bucket in the storage location, and groups elsewhere copy it", async () => {
    const img = new gcp.Image("api", {
      catalog,
      region: "us-east1",
      source: { disk: "/images/api/disk.tar.gz" },
      tags: { team: "api" },
    });
    const id = await valueOf(img.imageId);
    const bucket = one("api-import", "gcp:storage/bucket:Bucket");
    const object = one("api-disk", "gcp:storage/bucketObject:BucketObject");
    const image = registered.find((r) => r.name === "api" && r.type === IMAGE);
    expect(bucket.inputs).toMatchObject({ location: "US", forceDestroy: true, project: PROJECT });
    expect(object.inputs).toMatchObject({
      bucket: `api-import-${hex("api-import", 7)}`,
      name: "gci-images/api/disk.tar.gz",
    });
    expect(image?.inputs).toMatchObject({
      rawDisk: {
        source: `https://storage.googleapis.com/api-import-${hex("api-import", 7)}/gci-images/api/disk.tar.gz`,
      },
      storageLocations: ["us"],
      labels: { team: "api", "gci-image": "api" },
    });
    const g = new gcp.VirtualMachineGroup("api-asia", {
      catalog,
      image: img,
      region: "asia-east1",
      count: 1,
    });
    await valueOf(g.vmIds);
    expect(one("api-asia-copy", IMAGE).inputs).toMatchObject({
      sourceImage: id,
      storageLocations: ["asia-east1"],
    });
    expect(one("api-asia-copy", IMAGE).inputs.labels.team).toBe("api");
  });
});

describe("bad input is refused at construction, before anything is registered", () => {
  const cases: [string, Partial<gcp.VirtualMachineGroupArgs>, RegExp][] = [
    [
      "an unknown region",
      { region: "europe-west9" },
      /region: "europe-west9" is not a GCP region of the catalog; it lists "asia-east1", "europe-west1", "us-central1", "us-east1"/,
    ],
    [
      "an image from the wrong location",
      { image: { name: "web", region: "us-central1", imageId: ASIA } },
      /image.imageId: image ".*web-asia" is stored in "asia-east1" per the catalog, not in "us" where home region "us-central1" stores images/,
    ],
    ["a count of 0", { count: 0 }, /count: 0 is out of range: ask for 1 to 100 VMs/],
    ["a count of 101", { count: 101 }, /count: 101 is out of range/],
    [
      "an unknown machine size",
      { machineSize: "huge" as never },
      /machineSize: "huge" is unknown: use one of nano \(e2-micro\)/,
    ],
    [
      "an unknown zone",
      { region: undefined, datacenter: "europe-west1-z" },
      /datacenter: "europe-west1-z" is not a GCP datacenter/,
    ],
    ["a label GCP refuses", { tags: { Team: "Platform" } }, /tags\["Team"\]: "Team" is not a GCP label key/],
    [
      "a malformed KMS key",
      { kmsKeyIds: { "europe-west1": "key" } },
      /kmsKeyIds\["europe-west1"\]: "key" is not a Cloud KMS key/,
    ],
  ];
  it.each(cases)("%s", async (what, bad, message) => {
    const name = `bad-${what.replace(/\W+/g, "-")}`;
    const args: gcp.VirtualMachineGroupArgs = {
      catalog,
      image: web,
      region: "europe-west1",
      count: 1,
      ...bad,
    };
    expect(() => new gcp.VirtualMachineGroup(name, args)).toThrow(message);
    expect(() => new gcp.VirtualMachineGroup(name, args)).toThrow(CloudArgsError);
    await new Promise((r) => setImmediate(r));
    expect(of(name)).toEqual([]);
  });

  it("refuses an image source that is not exactly one kind, and a disk that is not a .tar.gz", () => {
    expect(
      () =>
        new gcp.Image("two", {
          catalog,
          region: "us-east1",
          source: { imageId: HOME, disk: "d.tar.gz" } as never,
        }),
    ).toThrow(/source: is .* expected one of/);
    expect(() => new gcp.Image("raw", { catalog, region: "us-east1", source: { disk: "disk.raw" } })).toThrow(
      /source.disk: "disk.raw" is not a .tar.gz path/,
    );
  });
});

describe("examples/gcp", () => {
  it("declares the image, a copy into europe-west1 only, and a VM with a public web port in each region", async () => {
    const program = (await import("../../../examples/gcp")).default;
    const outputs = await program();
    const urls = await valueOf(outputs.urls);
    expect(urls).toHaveLength(2);
    for (const url of urls) expect(url).toMatch(/^http:\/\/198\.51\.100\.\d+:80$/);
    const image = registered.find((r) => r.type === IMAGE && r.name === "web");
    expect(image?.inputs).toMatchObject({
      sourceImage: "projects/debian-cloud/global/images/family/debian-12",
      storageLocations: ["us-central1"],
    });
    const copies = [...of("web-us", IMAGE), ...of("web-eu", IMAGE)];
    expect(copies.map((c) => c.name)).toEqual(["web-eu-copy-europe-west1"]);
    expect(copies[0].inputs).toMatchObject({ sourceImage: image?.id, storageLocations: ["europe-west1"] });
    expect(copies[0].customTimeouts?.create).toBe("30m");
    expect(one("web-eu-0", INSTANCE).inputs).toMatchObject({
      zone: "europe-west1-b",
      machineType: "e2-micro",
      bootDisk: { initializeParams: { image: copies[0].id } },
    });
    expect(one("web-us-0", INSTANCE).inputs.bootDisk.initializeParams.image).toBe(image?.id);
  });
});
