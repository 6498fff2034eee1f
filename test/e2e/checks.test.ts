import * as path from "path";
import { REPO, TempProject, tempProject } from "../support/engine";
import { TestWorld, testWorld } from "../support/world";

const SDK = JSON.stringify(path.join(REPO, "sdk"));
const MISSING_IMAGE = `sha256:${"0".repeat(64)}`;

/**
 * Invalid programs through the real engine: `check` reports every bad input at once, each
 * naming the property and the fix, and a malformed catalog stack output fails the program
 * with every problem listed.
 */
describe("checks of invalid programs through the real pulumi CLI", () => {
  let world: TestWorld;
  const projects: TempProject[] = [];

  beforeAll(async () => {
    world = await testWorld({ regions: { us: ["us-1"], eu: ["eu-1"] } });
  });

  afterAll(async () => {
    for (const p of projects) p.remove();
    await world?.stop();
  });

  /** Previews a one-resource program; returns the engine's complaints. */
  async function previewFailures(name: string, args: string): Promise<string> {
    const project = tempProject(
      name,
      `import * as gci from ${SDK};
const catalog = gci.Catalog.fromWorld(${JSON.stringify(world.dir)});
new gci.VirtualMachineGroup("bad", ${args});
`,
    );
    projects.push(project);
    const run = await project.gci(["stack", "preview", "--json"]);
    expect(run.code).not.toBe(0);
    return run.stderr;
  }

  // The engine stops at the first resource whose check fails, so each case is its own program;
  // within a resource, every bad input is reported at once.
  const cases: [string, string, [string, string][]][] = [
    [
      "region",
      `{ catalog, image: ${JSON.stringify(MISSING_IMAGE)}, region: "mars", count: 0, machineSize: "huge" }`,
      [
        ["region", 'region "mars" is not in the catalog (regions: us, eu)'],
        ["count", "count 0 is out of range: ask for 1 to 1000 VMs"],
        ["machineSize", 'machine size "huge" is unknown: use one of nano (1 vCPU, 128 MiB)'],
        ["image", `image ${MISSING_IMAGE} is not in the catalog: upload it first`],
      ],
    ],
    [
      "datacenter",
      `{ catalog, image: "latest", datacenter: "eu-9", count: 5000, ports: [0] }`,
      [
        ["datacenter", 'datacenter "eu-9" is not in the catalog (known: us-1 (us), eu-1 (eu))'],
        ["count", "count 5000 is out of range"],
        ["image", 'image digest "latest" is not valid'],
        ["ports", "ports [0] must be a list of port numbers from 1 to 65535"],
      ],
    ],
    [
      "catalog",
      `{
  catalog: {
    schema: "gci.catalog/v0",
    catalog: "mysql://db",
    regions: [],
    datacenters: [{ name: "eu-1", region: "eu", endpoint: "nowhere" }],
  } as unknown as gci.CatalogOutput,
  image: ${JSON.stringify(MISSING_IMAGE)},
  region: "eu",
  count: 1,
}`,
      [
        ["catalog.schema", 'is "gci.catalog/v0", expected "gci.catalog/v1"'],
        ["catalog.catalog", 'is "mysql://db", expected the catalog location'],
        ["catalog.regions", "is [], expected a non-empty list of region names"],
        ["catalog.datacenters[0].endpoint", 'is "nowhere", expected host:port'],
      ],
    ],
  ];
  it.each(cases)(
    "reports every invalid input at once (bad %s), and moves nothing",
    async (name, args, expected) => {
      const stderr = await previewFailures(`checks-${name}`, args);
      for (const [property, reason] of expected) {
        expect(stderr).toContain(`resource 'bad': property ${property} value`);
        expect(stderr).toContain(reason);
      }
      const catalog = await world.catalog();
      try {
        expect(await catalog.listVmGroups()).toEqual([]);
      } finally {
        await catalog.close();
      }
    },
  );

  it("fails a program whose catalog stack output is malformed, listing every problem", async () => {
    const project = tempProject(
      "badoutput",
      `import * as gci from ${SDK};
const catalog = gci.Catalog.fromStackOutput({ schema: "gci.catalog/v1", datacenters: [{ name: "eu-1" }] });
new gci.VirtualMachineGroup("web", { catalog, image: ${JSON.stringify(MISSING_IMAGE)}, region: "eu", count: 1 });
`,
    );
    projects.push(project);
    const run = await project.gci(["stack", "preview", "--json"]);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain("the catalog stack output is malformed");
    // pulumi's errors as it printed them: not the Automation API's dump, not a stack trace.
    expect(run.stderr).toContain("gci: pulumi failed:\nerror: ");
    expect(run.stderr).not.toContain("err?:");
    expect(run.stderr).not.toMatch(/^\s+at /m);
    for (const problem of [
      "catalog stack output.catalog: is missing",
      "catalog stack output.regions: is missing",
      "catalog stack output.datacenters[0].region: is missing",
      "catalog stack output.datacenters[0].endpoint: is missing",
    ]) {
      expect(run.stderr).toContain(problem);
    }
  });
});
