/**
 * aws.Image and aws.VirtualMachineGroup through Pulumi's mocks (no cloud is reachable here;
 * see registrations.ts): every registration is recorded and its inputs asserted.
 */

import { createHash } from "crypto";
import { Provider } from "@pulumi/aws";
import * as aws from "../../../sdk/aws";
import type { CloudCatalog } from "../../../sdk/cloud";
import { CloudArgsError } from "../../../sdk/cloud";
import { type Registration, providerRef, recordRegistrations, valueOf } from "./registrations";

const HOME_AMI = "ami-0aaaaaaaaaaaaaaa1";
const SYDNEY_AMI = "ami-0bbbbbbbbbbbbbbb2";
const LATEST_AL2023 = "ami-0cccccccccccccccc";
const EU_KEY = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/** web is registered in us-east-1 and already copied to ap-southeast-2; eu-west-1 lacks it. */
const catalog: CloudCatalog = {
  aws: {
    regions: {
      "us-east-1": { availabilityZones: ["us-east-1a", "us-east-1b"], amis: { web: HOME_AMI } },
      "eu-west-1": { availabilityZones: ["eu-west-1a"] },
      "ap-southeast-2": { amis: { web: SYDNEY_AMI } },
    },
  },
};

const hex = (s: string, n: number): string => createHash("sha256").update(s).digest("hex").slice(0, n);

let registered: Registration[];
beforeAll(async () => {
  registered = await recordRegistrations(
    (args) => {
      switch (args.type) {
        case "aws:ec2/amiCopy:AmiCopy":
        case "aws:ec2/ami:Ami":
          return { id: `ami-${hex(args.name, 17)}` };
        case "aws:s3/bucket:Bucket":
          return { state: { bucket: `${args.name}-${hex(args.name, 7)}` } };
        case "aws:ebs/snapshotImport:SnapshotImport":
          return { id: `snap-${hex(args.name, 17)}` };
        case "aws:ec2/instance:Instance":
          return {
            id: `i-${hex(args.name, 17)}`,
            state: {
              publicIp: `203.0.113.${parseInt(hex(args.name, 2), 16) % 250}`,
              privateIp: "10.0.0.5",
              availabilityZone: args.inputs.availabilityZone ?? "zone-picked-by-aws",
            },
          };
        default:
          return {};
      }
    },
    (args) => (args.token === "aws:ec2/getAmi:getAmi" ? { id: LATEST_AL2023 } : args.inputs),
  );
});

/** Registrations of the group (or image) called `name`: its children are named `<name>-...` or `<name>`. */
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

/** The region of the provider a registration uses. */
function regionOf(r: Registration): string {
  const p = registered.find((x) => x.type === "pulumi:providers:aws" && providerRef(x) === r.provider);
  if (!p)
    throw new Error(`${r.type} ${r.name} uses no recorded aws provider (${JSON.stringify(r.provider)})`);
  return p.inputs.region;
}

const web = { name: "web", region: "us-east-1", amiId: HOME_AMI, tags: { team: "platform" } };

describe("placement: a copy exactly where the catalog lacks the AMI", () => {
  let groups: aws.VirtualMachineGroup[];
  beforeAll(async () => {
    groups = ["us-east-1", "eu-west-1", "ap-southeast-2"].map(
      (region) =>
        new aws.VirtualMachineGroup(`place-${region}`, {
          catalog,
          image: web,
          region,
          count: 2,
          machineSize: "small",
        }),
    );
    await Promise.all(groups.map((g) => valueOf(g.vmIds)));
  });

  it("declares one AmiCopy, in eu-west-1 from us-east-1, and none in the other regions", () => {
    const copies = registered.filter(
      (r) => r.type === "aws:ec2/amiCopy:AmiCopy" && r.name.startsWith("place-"),
    );
    expect(copies.map((c) => c.name)).toEqual(["place-eu-west-1-copy-eu-west-1"]);
    expect(copies[0].inputs).toMatchObject({ sourceAmiId: HOME_AMI, sourceAmiRegion: "us-east-1" });
    expect(regionOf(copies[0])).toBe("eu-west-1");
  });

  it("runs the eu-west-1 instances from the copied AMI id, with the region's provider", () => {
    const copy = one("place-eu-west-1", "aws:ec2/amiCopy:AmiCopy");
    const vms = of("place-eu-west-1", "aws:ec2/instance:Instance");
    expect(vms).toHaveLength(2);
    for (const vm of vms) {
      expect(vm.inputs.ami).toBe(copy.id);
      expect(vm.inputs.instanceType).toBe("t3.small");
      expect(regionOf(vm)).toBe("eu-west-1");
    }
  });

  it("runs from the AMI already in the region where the catalog lists one", () => {
    for (const vm of of("place-ap-southeast-2", "aws:ec2/instance:Instance")) {
      expect(vm.inputs.ami).toBe(SYDNEY_AMI);
      expect(regionOf(vm)).toBe("ap-southeast-2");
    }
    for (const vm of of("place-us-east-1", "aws:ec2/instance:Instance")) {
      expect(vm.inputs.ami).toBe(HOME_AMI);
      expect(regionOf(vm)).toBe("us-east-1");
    }
  });

  it("outputs the region, the VM ids, the AMI and the transfer", async () => {
    const [home, eu] = [groups[0], groups[1]];
    expect(await valueOf(eu.region)).toBe("eu-west-1");
    expect(await valueOf(eu.vmIds)).toEqual(
      of("place-eu-west-1", "aws:ec2/instance:Instance").map((r) => r.id),
    );
    const copy = one("place-eu-west-1", "aws:ec2/amiCopy:AmiCopy");
    expect(await valueOf(eu.amiId)).toBe(copy.id);
    expect(await valueOf(eu.transfer)).toEqual({
      image: "web",
      source: "us-east-1",
      destination: "eu-west-1",
      sourceImageId: HOME_AMI,
      imageId: copy.id,
    });
    expect(await valueOf(home.transfer)).toBeNull();
    expect(await valueOf(home.datacenter)).toBe("zone-picked-by-aws");
  });

  it("registers every child under its group", () => {
    const group = registered.find(
      (r) => r.type === "gci:aws:VirtualMachineGroup" && r.name === "place-eu-west-1",
    );
    expect(group?.custom).toBe(false);
    for (const r of of("place-eu-west-1").filter((x) => x !== group)) expect(r.parent).toBe(group?.urn);
  });
});

describe("a group placed on a datacenter", () => {
  it("pins the instances to that availability zone of its region", async () => {
    const g = new aws.VirtualMachineGroup("dc", {
      catalog,
      image: web,
      datacenter: "us-east-1b",
      count: 1,
      ports: [80, 443],
    });
    await valueOf(g.vmIds);
    expect(await valueOf(g.datacenter)).toBe("us-east-1b");
    expect(await valueOf(g.region)).toBe("us-east-1");
    const vm = one("dc-0", "aws:ec2/instance:Instance");
    expect(vm.inputs.availabilityZone).toBe("us-east-1b");
    expect(regionOf(vm)).toBe("us-east-1");
    const sg = one("dc", "aws:ec2/securityGroup:SecurityGroup");
    expect(sg.inputs.ingress).toEqual([
      { protocol: "tcp", fromPort: 80, toPort: 80, cidrBlocks: ["0.0.0.0/0"] },
      { protocol: "tcp", fromPort: 443, toPort: 443, cidrBlocks: ["0.0.0.0/0"] },
    ]);
    expect(vm.inputs.vpcSecurityGroupIds).toEqual([sg.id]);
    const ip = (await valueOf(g.addresses))[0].split(":")[0];
    expect(await valueOf(g.addresses)).toEqual([`${ip}:80`, `${ip}:443`]);
    expect(await valueOf(g.urls)).toEqual([`http://${ip}:80`]);
    expect(ip).toMatch(/^203\.0\.113\./);
  });

  it("looks the image up in the catalog when the group names it only", async () => {
    const g = new aws.VirtualMachineGroup("byname", {
      catalog,
      image: { name: "web" },
      region: "eu-west-1",
      count: 1,
    });
    await valueOf(g.vmIds);
    // us-east-1 sorts after ap-southeast-2, which lists web too: the first listing region is the source.
    expect(one("byname", "aws:ec2/amiCopy:AmiCopy").inputs).toMatchObject({
      sourceAmiId: SYDNEY_AMI,
      sourceAmiRegion: "ap-southeast-2",
    });
    expect(of("byname", "aws:ec2/securityGroup:SecurityGroup")).toHaveLength(0);
  });
});

describe("copy options reach the AmiCopy", () => {
  it("by default: not retained, not encrypted, image tags copied, a 60m create timeout", async () => {
    const g = new aws.VirtualMachineGroup("defaults", { catalog, image: web, region: "eu-west-1", count: 1 });
    await valueOf(g.vmIds);
    const copy = one("defaults", "aws:ec2/amiCopy:AmiCopy");
    expect(copy.retainOnDelete).toBeFalsy();
    expect(copy.customTimeouts?.create).toBe("60m");
    expect(copy.inputs.encrypted).toBe(false);
    expect(copy.inputs.kmsKeyId).toBeUndefined();
    expect(copy.inputs.tags).toMatchObject({
      team: "platform",
      "gci:group": "defaults",
      "gci:image": "web",
      "gci:source-region": "us-east-1",
      "gci:source-ami": HOME_AMI,
    });
    expect(one("defaults-0", "aws:ec2/instance:Instance").inputs.rootBlockDevice).toBeUndefined();
  });

  it("retainCopyOnDelete, encrypted with the region's KMS key, copyTags off, copyTimeout", async () => {
    const g = new aws.VirtualMachineGroup("options", {
      catalog,
      image: web,
      region: "eu-west-1",
      count: 1,
      retainCopyOnDelete: true,
      encrypted: true,
      kmsKeyIds: {
        "eu-west-1": EU_KEY,
        "us-east-1": "arn:aws:kms:us-east-1:111122223333:key/other",
      },
      copyTags: false,
      tags: { env: "prod" },
      copyTimeout: "2h30m",
    });
    await valueOf(g.vmIds);
    const copy = one("options", "aws:ec2/amiCopy:AmiCopy");
    expect(copy.retainOnDelete).toBe(true);
    expect(copy.customTimeouts?.create).toBe("2h30m");
    expect(copy.inputs).toMatchObject({ encrypted: true, kmsKeyId: EU_KEY });
    expect(copy.inputs.tags.team).toBeUndefined();
    expect(copy.inputs.tags.env).toBe("prod");
    const vm = one("options-0", "aws:ec2/instance:Instance");
    expect(vm.inputs.rootBlockDevice).toEqual({ encrypted: true, kmsKeyId: EU_KEY });
    expect(vm.inputs.tags).toMatchObject({ env: "prod", Name: "options-0" });
    // Instances are not retained: only the copy outlives the group.
    expect(vm.retainOnDelete).toBeFalsy();
  });

  it("uses a provider the program passes instead of making one", async () => {
    const mine = new Provider("my-eu", { region: "eu-west-1" });
    const g = new aws.VirtualMachineGroup("given", {
      catalog,
      image: web,
      region: "eu-west-1",
      count: 1,
      provider: mine,
    });
    await valueOf(g.vmIds);
    expect(of("given", "pulumi:providers:aws")).toHaveLength(0);
    const p = registered.find((r) => r.name === "my-eu");
    expect(one("given", "aws:ec2/amiCopy:AmiCopy").provider).toBe(p && providerRef(p));
  });
});

describe("aws.Image", () => {
  it("registers an existing AMI without creating anything", async () => {
    const img = new aws.Image("existing", {
      catalog,
      region: "us-east-1",
      name: "web",
      source: { amiId: HOME_AMI },
    });
    expect(await valueOf(img.amiId)).toBe(HOME_AMI);
    await valueOf(img.urn);
    expect(of("existing").map((r) => r.type)).toEqual(["gci:aws:Image"]);
  });

  it("imports a disk through S3, a snapshot import and an AMI, in the home region", async () => {
    const img = new aws.Image("imported", {
      catalog,
      region: "us-east-1",
      source: { disk: "/images/api/disk.raw", importTimeout: "90m" },
      tags: { team: "api" },
    });
    const amiId = await valueOf(img.amiId);
    const bucket = one("imported-import", "aws:s3/bucket:Bucket");
    const object = one("imported-disk", "aws:s3/bucketObjectv2:BucketObjectv2");
    const snapshot = one("imported-snapshot", "aws:ebs/snapshotImport:SnapshotImport");
    const ami = registered.find((r) => r.name === "imported" && r.type === "aws:ec2/ami:Ami");
    expect(object.inputs).toMatchObject({
      key: "gci-images/imported/disk.raw",
      bucket: `imported-import-${hex("imported-import", 7)}`,
    });
    expect(snapshot.inputs.diskContainer).toEqual({
      format: "RAW",
      userBucket: { s3Bucket: object.inputs.bucket, s3Key: "gci-images/imported/disk.raw" },
    });
    expect(snapshot.inputs.roleName).toBe("vmimport");
    expect(snapshot.customTimeouts?.create).toBe("90m");
    expect(ami?.inputs.ebsBlockDevices[0]).toMatchObject({
      deviceName: "/dev/xvda",
      snapshotId: snapshot.id,
    });
    expect(ami?.inputs.rootDeviceName).toBe("/dev/xvda");
    expect(amiId).toBe(ami?.id);
    for (const r of [bucket, object, snapshot, ami as Registration]) expect(regionOf(r)).toBe("us-east-1");

    // A group elsewhere copies the imported AMI, with the image's tags.
    const g = new aws.VirtualMachineGroup("imported-eu", {
      catalog,
      image: img,
      region: "eu-west-1",
      count: 1,
    });
    await valueOf(g.vmIds);
    const copy = one("imported-eu", "aws:ec2/amiCopy:AmiCopy");
    expect(copy.inputs).toMatchObject({ sourceAmiId: amiId, sourceAmiRegion: "us-east-1" });
    expect(copy.inputs.tags.team).toBe("api");
  });
});

describe("bad input is refused at construction, before anything is registered", () => {
  const cases: [string, Partial<aws.VirtualMachineGroupArgs>, RegExp][] = [
    [
      "an unknown region",
      { region: "eu-west-9" },
      /region: "eu-west-9" is not an AWS region of the catalog; it lists "ap-southeast-2", "eu-west-1", "us-east-1"/,
    ],
    [
      "an AMI id from the wrong region",
      { image: { name: "web", region: "us-east-1", amiId: SYDNEY_AMI } },
      /image.amiId: AMI "ami-0bbbbbbbbbbbbbbb2" is in region "ap-southeast-2" per the catalog, not in the image's home region "us-east-1"/,
    ],
    ["a count of 0", { count: 0 }, /count: 0 is out of range: ask for 1 to 100 VMs/],
    ["a count of 101", { count: 101 }, /count: 101 is out of range/],
    ["a fractional count", { count: 2.5 }, /count: 2.5 is out of range/],
    [
      "an unknown machine size",
      { machineSize: "huge" as never },
      /machineSize: "huge" is unknown: use one of nano \(t3.nano\), micro \(t3.micro\)/,
    ],
    [
      "an unknown datacenter",
      { region: undefined, datacenter: "eu-west-1z" },
      /datacenter: "eu-west-1z" is not an AWS datacenter/,
    ],
    [
      "a bad AMI id",
      { image: { name: "web", region: "us-east-1", amiId: "ami-XYZ" } },
      /"ami-XYZ" is not an AMI id/,
    ],
    [
      "a KMS key of another region",
      { encrypted: true, kmsKeyIds: { "eu-west-1": "arn:aws:kms:us-east-1:111122223333:key/k" } },
      /kmsKeyIds\["eu-west-1"\]: .* is a key of region "us-east-1"; a KMS key only encrypts in its own region/,
    ],
    ["a timeout beyond 24h", { copyTimeout: "25h" }, /copyTimeout: "25h" is out of range/],
    ["a timeout that is no duration", { copyTimeout: "soon" }, /copyTimeout: "soon" is not a duration/],
  ];
  it.each(cases)("%s", async (what, bad, message) => {
    const name = `bad-${what.replace(/\W+/g, "-")}`;
    const args: aws.VirtualMachineGroupArgs = { catalog, image: web, region: "eu-west-1", count: 1, ...bad };
    expect(() => new aws.VirtualMachineGroup(name, args)).toThrow(message);
    expect(() => new aws.VirtualMachineGroup(name, args)).toThrow(CloudArgsError);
    await new Promise((r) => setImmediate(r));
    expect(of(name)).toEqual([]);
  });

  it("lists every problem at once", () => {
    let error: unknown;
    try {
      new aws.VirtualMachineGroup("many", {
        catalog,
        image: web,
        region: "mars-1",
        count: -1,
        machineSize: "xl" as never,
      });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(CloudArgsError);
    expect((error as CloudArgsError).code).toBe("INVALID_ARGUMENT");
    expect((error as CloudArgsError).problems.map((p) => p.property).sort()).toEqual([
      "count",
      "machineSize",
      "region",
    ]);
  });

  it("refuses an image whose AMI the catalog places in another region", () => {
    expect(
      () =>
        new aws.Image("wrong-home", {
          catalog,
          region: "eu-west-1",
          name: "web",
          source: { amiId: HOME_AMI },
        }),
    ).toThrow(/source.amiId: AMI "ami-0aaaaaaaaaaaaaaa1" is in region "us-east-1" per the catalog/);
    expect(of("wrong-home")).toEqual([]);
  });
});

describe("examples/aws", () => {
  it("declares an AMI copy into eu-west-1 only, and a VM with a public web port in each region", async () => {
    const program = (await import("../../../examples/aws")).default;
    const outputs = await program();
    const urls = await valueOf(outputs.urls);
    expect(urls).toHaveLength(2);
    for (const url of urls) expect(url).toMatch(/^http:\/\/203\.0\.113\.\d+:80$/);
    const copies = [...of("web-us", "aws:ec2/amiCopy:AmiCopy"), ...of("web-eu", "aws:ec2/amiCopy:AmiCopy")];
    expect(copies).toHaveLength(1);
    expect(copies[0].inputs).toMatchObject({ sourceAmiId: LATEST_AL2023, sourceAmiRegion: "us-east-1" });
    expect(copies[0].customTimeouts?.create).toBe("45m");
    expect(regionOf(copies[0])).toBe("eu-west-1");
    expect(one("web-eu-0", "aws:ec2/instance:Instance").inputs).toMatchObject({
      ami: copies[0].id,
      instanceType: "t3.nano",
    });
    expect(one("web-us-0", "aws:ec2/instance:Instance").inputs.ami).toBe(LATEST_AL2023);
    expect(one("web-eu-0", "aws:ec2/instance:Instance").inputs.userData).toContain(
      "hello from GCI in eu-west-1",
    );
  });
});
