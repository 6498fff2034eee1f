import * as path from "path";
import { REPO, TempProject, tempProject } from "../support/engine";
import { processImage } from "../support/guest";
import { TestWorld, testWorld } from "../support/world";
import { summaryOf, worldSnapshot } from "./support";

/** ImageReplica: a transfer as its own step, planned in preview, undone by destroy. */
describe("an ImageReplica through the real pulumi CLI", () => {
  let world: TestWorld;
  let project: TempProject;
  let image: { file: string; digest: string; sizeBytes: number };

  beforeAll(async () => {
    [world, image] = await Promise.all([
      testWorld({ regions: { us: ["us-1"], eu: ["eu-1"] } }),
      processImage(),
    ]);
    project = tempProject(
      "replica",
      `import * as gci from ${JSON.stringify(path.join(REPO, "sdk"))};
const catalog = gci.Catalog.fromWorld(${JSON.stringify(world.dir)});
const image = new gci.Image("web", { catalog, datacenter: "us-1", file: ${JSON.stringify(image.file)} });
const copy = new gci.ImageReplica("web-in-eu", { catalog, image, datacenter: "eu-1" });
export const transfer = copy.transfer;
`,
    );
  });

  afterAll(async () => {
    await project?.gci(["stack", "destroy", "--json"]).catch(() => undefined);
    project?.remove();
    await world?.stop();
  });

  it("plans the copy in preview, moving nothing", async () => {
    const before = await worldSnapshot(world);
    const run = await project.gci(["stack", "preview", "--json"]);
    expect(run.code).toBe(0);
    expect(run.stderr).toMatch(/plannedTransfer: \{\s+bytes\s*: \d+\s+destination: "eu-1"/);
    expect(await worldSnapshot(world)).toEqual(before);
  });

  it("copies the image on up, then previews and refreshes with no changes", async () => {
    const up = summaryOf<{ outputs: { transfer: { source: string; destination: string; bytes: number } } }>(
      await project.gci(["stack", "up", "--json"]),
    );
    expect(up.outputs.transfer).toMatchObject({
      source: "us-1",
      destination: "eu-1",
      bytes: image.sizeBytes,
    });
    expect((await world.client("eu-1").getImage(image.digest)).datacenters).toEqual(["eu-1", "us-1"]);
    const preview = summaryOf<{ changeSummary: Record<string, number> }>(
      await project.gci(["stack", "preview", "--json"]),
    );
    expect(Object.keys(preview.changeSummary)).toEqual(["same"]);
    const refresh = summaryOf<{ summary: { resourceChanges: Record<string, number> } }>(
      await project.gci(["stack", "refresh", "--json"]),
    );
    expect(Object.keys(refresh.summary.resourceChanges)).toEqual(["same"]);
  });

  it("destroys the copy and the image", async () => {
    summaryOf(await project.gci(["stack", "destroy", "--json"]));
    const snap = await worldSnapshot(world);
    expect(snap.images).toEqual([]);
    expect(snap.placements).toEqual([]);
  });
});
