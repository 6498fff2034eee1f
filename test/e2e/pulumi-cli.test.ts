import * as path from "path";
import { SqliteCatalog } from "../../provider/catalog";
import { REPO, TempProject, engineVersion, tempProject } from "../support/engine";
import { processImage } from "../support/guest";
import { TestWorld, testWorld } from "../support/world";
import { pulumiCli, worldSnapshot } from "./support";

/**
 * `pulumi` itself in a project folder, as a user runs it after `eval "$(gci env)"`: the CLI
 * launches GCI's Node.js language host (scripts/engine-shim, next to the CLI).
 */
describe("the pulumi CLI run directly in a project folder", () => {
  let project: TempProject;

  beforeAll(async () => {
    const engine = await engineVersion();
    console.log(`pulumi CLI: ${engine.path} (${engine.version})`);
    project = tempProject(
      "direct",
      `import * as gci from ${JSON.stringify(path.join(REPO, "sdk"))};
const dc = new gci.Datacenter("lab-1", {
  catalog: "sqlite:" + __dirname + "/catalog.db",
  region: "lab",
  endpoint: "127.0.0.1:7001",
  requireHealthy: false,
});
export const name = dc.name;
`,
    );
    await pulumi(["stack", "init", "dev"]);
  });

  afterAll(() => project?.remove());

  const pulumi = (args: string[]) => pulumiCli(project.dir, project.stateDir)(...args);

  it("previews, ups, previews no changes, refreshes with no drift and destroys", async () => {
    const preview = await pulumi(["preview"]);
    expect(preview.stdout).toContain("+ 2 to create");
    const up = await pulumi(["up", "--yes"]);
    expect(up.stdout).toMatch(/name: "lab-1"/);
    const catalog = new SqliteCatalog({ path: path.join(project.dir, "catalog.db") });
    expect((await catalog.getDatacenter("lab-1"))?.region).toBe("lab");
    await pulumi(["preview", "--expect-no-changes"]);
    await pulumi(["refresh", "--yes", "--expect-no-changes"]);
    const down = await pulumi(["destroy", "--yes"]);
    expect(down.stdout).toContain("2 deleted");
    expect(await catalog.getDatacenter("lab-1")).toBeUndefined();
    await catalog.close();
  });
});

/** `pulumi preview --json`, as a CI pipeline runs it: the planned transfer is in the JSON. */
describe("pulumi preview --json in a pipeline", () => {
  let world: TestWorld;
  let project: TempProject;

  beforeAll(async () => {
    let image: { file: string; sizeBytes: number };
    [world, image] = await Promise.all([
      testWorld({ regions: { us: ["us-1"], eu: ["eu-1"] } }),
      processImage(),
    ]);
    project = tempProject(
      "pipeline",
      `import * as gci from ${JSON.stringify(path.join(REPO, "sdk"))};
const catalog = gci.Catalog.fromWorld(${JSON.stringify(world.dir)});
const image = new gci.Image("web", { catalog, datacenter: "us-1", file: ${JSON.stringify(image.file)} });
new gci.VirtualMachineGroup("web-eu", { catalog, image, region: "eu", count: 1, machineSize: "nano" });
`,
    );
    expect(image.sizeBytes).toBeGreaterThan(0);
  }, 120_000);

  afterAll(async () => {
    project?.remove();
    await world?.stop();
  });

  it("lists each group's planned transfer (source, destination, bytes) and moves nothing", async () => {
    const pulumi = pulumiCli(project.dir, project.stateDir);
    await pulumi("stack", "init", "ci");
    const before = await worldSnapshot(world);
    const { stdout } = await pulumi("preview", "--json");
    const preview = JSON.parse(stdout) as {
      steps: { op: string; urn: string; newState?: { inputs?: Record<string, unknown> } }[];
    };
    const group = preview.steps.find((s) => s.urn.endsWith("::web-eu"));
    const image = preview.steps.find((s) => s.urn.endsWith("::web"));
    expect(group?.op).toBe("create");
    expect(group?.newState?.inputs?.plannedTransfer).toEqual({
      digest: image?.newState?.inputs?.digest,
      source: "us-1",
      destination: "eu-1",
      bytes: image?.newState?.inputs?.sizeBytes,
    });
    expect(await worldSnapshot(world)).toEqual(before);
    expect(before.images).toEqual([]);
  });
});
