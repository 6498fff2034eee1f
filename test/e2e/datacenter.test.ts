import * as fs from "fs";
import * as path from "path";
import { SqliteCatalog } from "../../provider/catalog";
import { ENGINE_VERSION } from "../../provider/common/paths";
import { REPO, TempProject, engineVersion, tempProject } from "../support/engine";

/**
 * The first stack through the real engine: preview, up, preview (no changes), refresh (no
 * drift) and destroy of a Datacenter, driven by `gci stack` and the `pulumi` CLI built here.
 */
describe("a Datacenter stack through the real pulumi CLI", () => {
  let project: TempProject;
  let catalogFile: string;

  beforeAll(async () => {
    const engine = await engineVersion();
    // Shown in the test output: which engine ran.
    console.log(`pulumi CLI: ${engine.path} (${engine.version})`);
    expect(engine.version).toBe(`v${ENGINE_VERSION}`);
    project = tempProject(
      "dc",
      `import * as gci from ${JSON.stringify(path.join(REPO, "sdk"))};
const dc = new gci.Datacenter("eu-1", {
  catalog: "sqlite:" + __dirname + "/catalog.db",
  region: "eu",
  endpoint: "127.0.0.1:7001",
  vcpus: 4,
  // No cluster manager runs at that endpoint: this test is about the catalog record only.
  requireHealthy: false,
});
export const name = dc.name;
export const endpoint = dc.endpoint;
export const vcpus = dc.vcpus;
export const type = dc.urn.apply((u) => u.split("::")[2]);
`,
    );
    catalogFile = path.join(project.dir, "catalog.db");
  });

  afterAll(() => project?.remove());

  async function catalogDatacenters() {
    const catalog = new SqliteCatalog({ path: catalogFile });
    try {
      return await catalog.listDatacenters();
    } finally {
      await catalog.close();
    }
  }

  it("previews a create and changes nothing", async () => {
    const run = await project.gci(["stack", "preview", "--json"]);
    expect(run.stderr).toContain("+ 2 to create");
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout).changeSummary).toEqual({ create: 2 });
    expect(await catalogDatacenters()).toEqual([]);
  });

  it("creates the datacenter in the catalog on up", async () => {
    const run = await project.gci(["stack", "up", "--json"]);
    expect(run.code).toBe(0);
    const { outputs } = JSON.parse(run.stdout);
    expect(outputs).toEqual({
      name: "eu-1",
      endpoint: "127.0.0.1:7001",
      vcpus: 4,
      type: "pulumi-nodejs:dynamic/gci:Datacenter",
    });
    const dcs = await catalogDatacenters();
    expect(dcs.map((d) => [d.name, d.region, d.endpoint, d.capacity.vcpus])).toEqual([
      ["eu-1", "eu", "127.0.0.1:7001", 4],
    ]);
  });

  it("previews no changes after up", async () => {
    const run = await project.gci(["stack", "preview", "--json"]);
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout).changeSummary).toEqual({ same: 2 });
  });

  it("refreshes with no drift", async () => {
    const run = await project.gci(["stack", "refresh", "--json"]);
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout).summary.resourceChanges).toEqual({ same: 2 });
  });

  it("destroys the datacenter and removes it from the catalog", async () => {
    const run = await project.gci(["stack", "destroy", "--json"]);
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout).summary.resourceChanges).toEqual({ delete: 2 });
    expect(await catalogDatacenters()).toEqual([]);
  });

  it("refuses to refresh, destroy or read a stack that does not exist, creating none", async () => {
    for (const op of ["output", "refresh", "destroy", "cancel"]) {
      const run = await project.gci(["stack", op, "--stack", "nosuch"]);
      expect(run.code).toBe(1);
      expect(run.stderr).toContain('NOT_FOUND: stack "nosuch" of project');
      expect(run.stderr).toContain("check --stack and --state, or create it with `gci stack up`");
    }
    expect(fs.existsSync(path.join(project.dir, "Pulumi.nosuch.yaml"))).toBe(false);
  });
});
