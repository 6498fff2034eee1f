import { UNKNOWN } from "../../../provider/pulumi/dynamic/inputs";
import { previewReport } from "../../../provider/pulumi/dynamic/report";
import { VmGroupInputs, VmGroupOutputs, vmGroupHandlers } from "../../../provider/pulumi/dynamic/vmgroup";

const catalog = {
  schema: "gci.catalog/v1" as const,
  catalog: "sqlite:/tmp/catalog.db",
  regions: ["us", "eu"],
  datacenters: [
    { name: "us-1", region: "us", endpoint: "127.0.0.1:7001" },
    { name: "eu-1", region: "eu", endpoint: "127.0.0.1:7002" },
  ],
};
const digest = (c: string) => `sha256:${c.repeat(64)}`;

const inputs: VmGroupInputs = {
  catalog,
  image: digest("a"),
  region: "eu",
  count: 2,
  machineSize: "nano",
  timeoutSeconds: 600,
  requestKey: "app/dev/gci:VirtualMachineGroup//web",
  generation: 0,
};
const outputs: VmGroupOutputs = {
  ...inputs,
  requestId: "vmg-1",
  target: { region: "eu" },
  datacenter: "eu-1",
  region: "eu",
  vmIds: ["vm-1", "vm-2"],
  addresses: [],
  urls: [],
  transfer: null,
  updates: 0,
  complete: true,
};

describe("VirtualMachineGroup diff", () => {
  const diff = (news: Partial<VmGroupInputs>) =>
    vmGroupHandlers.diff!("vmg-1", outputs, { ...inputs, ...news });

  it("reports no change for the same inputs, whatever check planned", async () => {
    expect(await diff({})).toEqual({ changes: false, replaces: [], deleteBeforeReplace: false });
    expect(
      await diff({ plannedTransfer: { digest: digest("a"), source: "us-1", destination: "eu-1", bytes: 1 } }),
    ).toMatchObject({ changes: false });
  });

  it("scales in place on a count change", async () => {
    expect(await diff({ count: 5 })).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
  });

  it("replaces, new VMs first, on an image, size or place change", async () => {
    expect(await diff({ image: digest("b") })).toEqual({
      changes: true,
      replaces: ["image"],
      deleteBeforeReplace: false,
    });
    expect((await diff({ machineSize: "large" })).replaces).toEqual(["machineSize"]);
    expect((await diff({ region: undefined, datacenter: "eu-1" })).replaces).toEqual([
      "region",
      "datacenter",
    ]);
  });

  it("keeps the VMs when the new target accepts the datacenter the old one pinned", async () => {
    // How an imported group (read as pinned to its datacenter) meets a program naming its region.
    const pinned = { ...outputs, target: { datacenter: "eu-1" } };
    const news = { ...inputs, region: "eu", datacenter: undefined };
    expect(await vmGroupHandlers.diff!("vmg-1", pinned, news)).toEqual({
      changes: true,
      replaces: [],
      deleteBeforeReplace: false,
    });
    const elsewhere = { ...inputs, region: "us", datacenter: undefined };
    expect((await vmGroupHandlers.diff!("vmg-1", pinned, elsewhere)).replaces).toEqual([
      "region",
      "datacenter",
    ]);
  });

  it("sees the same catalog output in another order as no change", async () => {
    const reordered = { ...catalog, regions: ["eu", "us"], datacenters: [...catalog.datacenters].reverse() };
    expect(await diff({ catalog: reordered })).toMatchObject({ changes: false });
    const moved = {
      ...catalog,
      datacenters: [catalog.datacenters[0], { ...catalog.datacenters[1], endpoint: "127.0.0.1:7009" }],
    };
    expect(await diff({ catalog: moved })).toEqual({
      changes: true,
      replaces: [],
      deleteBeforeReplace: false,
    });
  });

  it("updates (a refresh saw fewer VMs) when the live count is below the program's", async () => {
    const drifted = { ...outputs, count: 1 };
    expect(await vmGroupHandlers.diff!("vmg-1", drifted, inputs)).toMatchObject({
      changes: true,
      replaces: [],
    });
  });
});

describe("VirtualMachineGroup check", () => {
  it("returns every failure at once without asking the world when the catalog output is malformed", async () => {
    const result = await vmGroupHandlers.check!(
      {},
      {
        ...inputs,
        catalog: { ...catalog, catalog: "mysql://x" },
        image: "latest",
        count: 0,
        machineSize: "huge",
        timeoutSeconds: 1,
      },
    );
    expect(result.failures!.map((f) => f.property)).toEqual([
      "catalog.catalog",
      "image",
      "count",
      "machineSize",
      "timeoutSeconds",
    ]);
  });

  it("skips values unknown during preview", async () => {
    const result = await vmGroupHandlers.check!(
      {},
      {
        ...inputs,
        catalog: { ...catalog, catalog: "mysql://x" },
        image: UNKNOWN,
        count: UNKNOWN as unknown as number,
      },
    );
    expect(result.failures!.map((f) => f.property)).toEqual(["catalog.catalog"]);
  });
});

describe("the preview report", () => {
  it("lists the steps and the planned transfers of a preview's events", () => {
    const planned = { digest: digest("a"), source: "us-1", destination: "eu-1", bytes: 42 };
    const urn = "urn:pulumi:dev::app::pulumi-nodejs:dynamic/gci:VirtualMachineGroup::web-eu";
    const step = (op: string, u: string, plannedTransfer: unknown) => ({
      sequence: 1,
      timestamp: 0,
      resourcePreEvent: {
        metadata: {
          op,
          urn: u,
          type: "pulumi-nodejs:dynamic/gci:VirtualMachineGroup",
          provider: "",
          new: {
            inputs: { plannedTransfer },
            outputs: {},
            type: "",
            urn: u,
            id: "",
            parent: "",
            provider: "",
          },
        },
      },
    });
    const report = previewReport([
      step("create", urn, planned),
      step("same", `${urn}-2`, null),
      step("update", `${urn}-3`, null),
      {
        sequence: 2,
        timestamp: 0,
        diagnosticEvent: { message: "careful\n", color: "never", severity: "warning" },
      },
      {
        sequence: 3,
        timestamp: 0,
        diagnosticEvent: { message: "gci: progress\n", color: "never", severity: "info" },
      },
    ] as never);
    expect(report.steps.map((s) => s.op)).toEqual(["create", "update"]);
    expect(report.plannedTransfers).toEqual([{ urn, resource: "web-eu", ...planned }]);
    expect(report.diagnostics).toEqual([{ severity: "warning", message: "careful" }]);
  });
});
