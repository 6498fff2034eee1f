import * as fs from "fs";
import * as path from "path";
import { waitForOperation } from "../../provider/common/client";
import { REPO, TempProject, tempProject } from "../support/engine";
import { processImage } from "../support/guest";
import { processesMentioning } from "../support/procs";
import { TestWorld, testWorld } from "../support/world";
import {
  StackRunner,
  httpGet,
  processVariant,
  pulumiCli,
  stackRunner,
  summaryOf,
  tempDir,
  worldSnapshot,
} from "./support";

const TYPE = "pulumi-nodejs:dynamic/gci:VirtualMachineGroup";

/**
 * The two examples through the real pulumi CLI, on a world of real cluster managers: the
 * platform stack registers the world and exports the catalog; the app stack (an image in us,
 * VM groups in eu and ap) goes through preview, up, no-change preview, refresh, scale, an
 * image change, drift, import and destroy. Process-driver images keep it fast.
 */
describe("examples/platform and examples/app through the real pulumi CLI", () => {
  let world: TestWorld;
  let dir: string;
  let platform: StackRunner;
  let app: StackRunner;
  let image1: { file: string; digest: string; sizeBytes: number };
  let image2File: string;
  let appConfig: Record<string, string | number>;
  const requestIds: string[] = [];

  type UpSummary = {
    summary: { resourceChanges: Record<string, number> };
    outputs: {
      imageDigest: string;
      urls: string[];
      vms: { region: string; datacenter: string; ids: string[]; urls: string[] }[];
      transfers: { source: string; destination: string; bytes: number; seconds: number }[];
      requestIds: string[];
    };
  };

  beforeAll(async () => {
    dir = tempDir("app-e2e");
    [world, image1] = await Promise.all([
      testWorld({ regions: { us: ["us-1"], eu: ["eu-1"], ap: ["ap-1"] } }),
      processImage(),
    ]);
    image2File = (await processVariant(dir, "process-web-v2")).file;
    const stack = `e2e${process.pid}`;
    const stateDir = path.join(dir, "state");
    platform = stackRunner(path.join(REPO, "examples", "platform"), stack, stateDir);
    app = stackRunner(path.join(REPO, "examples", "app"), stack, stateDir);
    appConfig = { platformStack: `organization/gci-platform/${stack}`, imageFile: image1.file };
    summaryOf(await platform.run("up", { worldDir: world.dir }));
  }, 180_000);

  afterAll(async () => {
    // Best effort, so a failed test leaves no VMs behind; the world stops anyway.
    await app?.run("destroy", appConfig).catch(() => undefined);
    await platform?.run("destroy", { worldDir: world.dir }).catch(() => undefined);
    app?.cleanup();
    platform?.cleanup();
    await world?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  it("previews the planned transfers and moves nothing", async () => {
    const before = await worldSnapshot(world);
    const run = await app.run("preview", appConfig);
    const summary = summaryOf<{
      changeSummary: Record<string, number>;
      plannedTransfers: {
        resource: string;
        source: string;
        destination: string;
        bytes: number;
        digest: string;
      }[];
    }>(run);
    expect(summary.changeSummary.create).toBe(4);
    // For people: the plan is in the preview's display ...
    expect(run.stderr).toMatch(
      /plannedTransfer: \{\s+bytes\s*: \d+\s+destination: "eu-1"\s+digest\s*: "sha256:[0-9a-f]+"\s+source\s*: "us-1"/,
    );
    // ... and for CI pipelines in the JSON summary.
    const planned = summary.plannedTransfers.map((t) => [
      t.resource,
      t.source,
      t.destination,
      t.bytes,
      t.digest,
    ]);
    expect(planned.sort()).toEqual([
      ["web-ap", "us-1", "ap-1", image1.sizeBytes, image1.digest],
      ["web-eu", "us-1", "eu-1", image1.sizeBytes, image1.digest],
    ]);
    expect(await worldSnapshot(world)).toEqual(before);
  });

  it("uploads the image once, starts the VMs where asked and each answers on its URL", async () => {
    const { summary, outputs } = summaryOf<UpSummary>(await app.run("up", appConfig));
    expect(summary.resourceChanges.create).toBe(4);
    expect(outputs.imageDigest).toBe(image1.digest);
    expect(outputs.vms.map((v) => [v.region, v.datacenter, v.ids.length])).toEqual([
      ["eu", "eu-1", 2],
      ["ap", "ap-1", 1],
    ]);
    expect(outputs.transfers.map((t) => [t.source, t.destination, t.bytes]).sort()).toEqual([
      ["us-1", "ap-1", image1.sizeBytes],
      ["us-1", "eu-1", image1.sizeBytes],
    ]);
    expect(outputs.urls).toHaveLength(3);
    for (const vm of outputs.vms) {
      for (const url of vm.urls) expect(await httpGet(url)).toContain(vm.datacenter);
    }
    requestIds.push(...outputs.requestIds);
    const snap = await worldSnapshot(world);
    expect(snap.groups).toHaveLength(2);
    expect(snap.daemonVms).toHaveLength(3);
  });

  it("previews no changes after up, and refresh finds no drift", async () => {
    const preview = summaryOf<{ changeSummary: Record<string, number> }>(await app.run("preview", appConfig));
    expect(Object.keys(preview.changeSummary)).toEqual(["same"]);
    const refresh = summaryOf<UpSummary>(await app.run("refresh", appConfig));
    expect(Object.keys(refresh.summary.resourceChanges)).toEqual(["same"]);
  });

  it("scales a group in place: the running VMs stay, one more joins", async () => {
    const before = (await world.client("eu-1").listVms(requestIds[0])).map((v) => v.id);
    const { summary, outputs } = summaryOf<UpSummary>(await app.run("up", { ...appConfig, countA: 3 }));
    expect(summary.resourceChanges).toMatchObject({ update: 1 });
    expect(summary.resourceChanges.replace).toBeUndefined();
    expect(outputs.requestIds).toEqual(requestIds);
    const eu = outputs.vms[0].ids;
    expect(eu).toHaveLength(3);
    expect(eu).toEqual(expect.arrayContaining(before));
    appConfig = { ...appConfig, countA: 3 };
  });

  it("replaces the VMs on an image change, new ones before the old ones go", async () => {
    const run = await app.run("up", { ...appConfig, imageFile: image2File });
    const { summary, outputs } = summaryOf<UpSummary>(run);
    expect(summary.resourceChanges).toMatchObject({ replace: 3 });
    expect(outputs.requestIds.filter((id) => requestIds.includes(id))).toEqual([]);
    expect(outputs.vms.map((v) => v.ids.length)).toEqual([3, 1]);
    for (const url of outputs.urls) expect(await httpGet(url)).toBeTruthy();
    // Create before delete: the engine created each replacement group before it deleted the original.
    for (const name of ["web-eu", "web-ap"]) {
      const created = run.stderr.indexOf(`VirtualMachineGroup ${name} created replacement`);
      const deleted = run.stderr.indexOf(`VirtualMachineGroup ${name} deleted original`);
      expect(created).toBeGreaterThan(-1);
      expect(deleted).toBeGreaterThan(created);
    }
    // The old image is gone from every datacenter; the old groups are gone.
    const snap = await worldSnapshot(world);
    expect(snap.placements.filter((p) => p.startsWith(image1.digest))).toEqual([]);
    expect(snap.groups.map((g) => g.split("@")[0]).sort()).toEqual([...outputs.requestIds].sort());
    requestIds.splice(0, requestIds.length, ...outputs.requestIds);
    appConfig = { ...appConfig, imageFile: image2File };
  });

  it("shows a VM stopped behind Pulumi's back on refresh, and the next up restores the count", async () => {
    const eu = world.client("eu-1");
    const [victim] = await eu.listVms(requestIds[0]);
    await waitForOperation(eu, await eu.stopVms("stopped-by-hand", requestIds[0], [victim.id]), {
      timeoutMs: 30_000,
    });

    const refresh = summaryOf<UpSummary>(await app.run("refresh", appConfig));
    expect(refresh.summary.resourceChanges).toMatchObject({ update: 1 });
    const preview = summaryOf<{ changeSummary: Record<string, number> }>(await app.run("preview", appConfig));
    expect(preview.changeSummary).toMatchObject({ update: 1 });

    const { outputs } = summaryOf<UpSummary>(await app.run("up", appConfig));
    // The cluster manager starts the stopped instance again (instance ids are per slot).
    expect(outputs.vms[0].ids).toHaveLength(3);
    expect(outputs.vms[0].ids).toContain(victim.id);
    const live = (await eu.listVms(requestIds[0])).filter((v) => v.state === "running");
    expect(live).toHaveLength(3);
  });

  it("imports a group the stack forgot back with `pulumi import`; the next up records its region, touching no VM", async () => {
    const urn = `urn:pulumi:${app.stack}::gci-app::${TYPE}::web-ap`;
    // The real CLI in the example's folder; the import id names no catalog: the local world's.
    const cli = pulumiCli(app.dir, app.stateDir, { GCI_WORLD: world.dir });
    const pulumi = (...args: string[]) => cli(...args, "--stack", app.stack);
    const ap = world.client("ap-1");
    const ids = async () =>
      (await ap.listVms(requestIds[1])).filter((v) => v.state === "running").map((v) => v.id);
    const before = await ids();
    expect(before).toHaveLength(1);

    await pulumi("state", "delete", urn, "--yes");
    expect(await ids()).toEqual(before); // forgotten, still running
    const imported = await pulumi(
      "import",
      TYPE,
      "web-ap",
      requestIds[1],
      "--yes",
      "--generate-code=false",
      "--protect=false",
    );
    expect(imported.stdout).toContain("1 imported");

    // Read pinned to ap-1; the program says region "ap": an update that records it.
    const preview = summaryOf<{ changeSummary: Record<string, number> }>(await app.run("preview", appConfig));
    expect(preview.changeSummary).toEqual({ same: 3, update: 1 });
    const { summary, outputs } = summaryOf<UpSummary>(await app.run("up", appConfig));
    expect(summary.resourceChanges).toEqual({ same: 3, update: 1 });
    expect(outputs.requestIds).toEqual(requestIds);
    expect(outputs.vms[1]).toMatchObject({ region: "ap", datacenter: "ap-1", ids: before });
    expect(await ids()).toEqual(before);
    const again = summaryOf<{ changeSummary: Record<string, number> }>(await app.run("preview", appConfig));
    expect(again.changeSummary).toEqual({ same: 4 });
  });

  describe("import of VM groups started outside Pulumi", () => {
    let project: TempProject | undefined;
    let imageDigest = "";

    /** A group started with the cluster manager's API, as another tool would: region eu, nano. */
    async function startOutside(requestId: string): Promise<string[]> {
      const op = await world.client("us-1").startVms({
        request_id: requestId,
        image_digest: imageDigest,
        region: "eu",
        count: 1,
        machine_size: "nano",
      });
      await waitForOperation(world.client(op.datacenter), op, { timeoutMs: 60_000 });
      return liveIds(requestId);
    }
    const liveIds = async (requestId: string) =>
      (await world.client("eu-1").listVms(requestId)).filter((v) => v.state === "running").map((v) => v.id);

    /** A program written from the README: the catalog of a running world, the group declared. */
    const program = (args: { target: string; count: number; extra?: string; opts?: string }) =>
      `import * as gci from ${JSON.stringify(path.join(REPO, "sdk"))};
const catalog = gci.Catalog.fromWorld(${JSON.stringify(world.dir)});
const group = new gci.VirtualMachineGroup(
  "legacy",
  { catalog, image: ${JSON.stringify(imageDigest)}, ${args.target}, count: ${args.count}, machineSize: "nano"${args.extra ?? ""} },
  ${args.opts ?? "{}"},
);
export const requestId = group.requestId;
export const vmIds = group.vmIds;
`;

    beforeAll(async () => {
      imageDigest = (await world.client("eu-1").listVms(requestIds[0]))[0].image_digest;
    });

    /** The next preview changes nothing; destroy stops the group's VMs. */
    async function previewsNothingThenDestroys(p: TempProject, id: string): Promise<void> {
      const preview = summaryOf<{ changeSummary: Record<string, number> }>(
        await p.gci(["stack", "preview", "--json"]),
      );
      expect(Object.keys(preview.changeSummary)).toEqual(["same"]);
      summaryOf(await p.gci(["stack", "destroy", "--json"]));
      expect(await liveIds(id)).toEqual([]);
    }

    afterEach(() => {
      project?.remove();
      project = undefined;
    });

    it("`pulumi import` records a running group; the program declaring it previews no changes, scales it in place, destroys it", async () => {
      const id = `cli-${process.pid}`;
      const [first] = await startOutside(id);
      project = tempProject("import-cli", program({ target: 'datacenter: "eu-1"', count: 1 }));
      // The real CLI in the project folder; the id names no catalog, so the local world's is used.
      const pulumi = pulumiCli(project.dir, project.stateDir, { GCI_WORLD: world.dir });
      await pulumi("stack", "init", "dev");
      // No code generation: the dynamic provider has no schema to generate from (README).
      const imported = await pulumi("import", TYPE, "legacy", id, "--yes", "--generate-code=false");
      expect(imported.stdout).toContain("1 imported");
      const state = JSON.parse((await pulumi("stack", "export")).stdout) as {
        deployment: {
          resources: { type: string; id: string; protect?: boolean; outputs: { vmIds: string[] } }[];
        };
      };
      const group = state.deployment.resources.find((r) => r.type === TYPE)!;
      expect(group).toMatchObject({ id, protect: true, outputs: { vmIds: [first] } });

      // The program declaring the group as it runs: nothing to change.
      await pulumi("preview", "--expect-no-changes");
      // Twice the VMs: the imported group grows in place, its VM kept.
      fs.writeFileSync(
        path.join(project.dir, "index.ts"),
        program({ target: 'datacenter: "eu-1"', count: 2 }),
      );
      const up = await pulumi("up", "--yes");
      expect(up.stdout).toContain("1 updated");
      const ids = await liveIds(id);
      expect(ids).toHaveLength(2);
      expect(ids).toContain(first);
      await pulumi("refresh", "--yes", "--expect-no-changes");

      // `pulumi import` protects what it imports: unprotect, then destroy stops the VMs.
      await pulumi("state", "unprotect", `urn:pulumi:dev::import-cli::${TYPE}::legacy`, "--yes");
      const down = await pulumi("destroy", "--yes");
      expect(down.stdout).toContain("2 deleted");
      expect(await liveIds(id)).toEqual([]);
    });

    it("the import resource option takes a group over by id@catalog; a program naming its region records that, touching no VM", async () => {
      const id = `option-${process.pid}`;
      const [first] = await startOutside(id);
      const location = world.state.catalog;
      project = tempProject(
        "import-option",
        program({
          target: 'region: "eu"',
          count: 1,
          opts: `{ import: ${JSON.stringify(`${id}@${location}`)} }`,
        }),
      );
      const up = summaryOf<{
        summary: { resourceChanges: Record<string, number> };
        outputs: { requestId: string; vmIds: string[] };
      }>(await project.gci(["stack", "up", "--json"]));
      // Imported as it runs (pinned to eu-1), then updated to the program's target: region eu.
      expect(up.summary.resourceChanges).toMatchObject({ import: 1, update: 1, create: 1 });
      expect(up.outputs).toEqual({ requestId: id, vmIds: [first] });
      expect(await liveIds(id)).toEqual([first]);
      await previewsNothingThenDestroys(project, id);
    });

    it("refuses an id that names no group, and a kind that cannot be imported, recording nothing", async () => {
      project = tempProject("import-bad", program({ target: 'region: "eu"', count: 1 }));
      // No catalog in the environment, and no world where the default world would be.
      const pulumi = pulumiCli(project.dir, project.stateDir, {
        GCI_WORLD: path.join(project.dir, "no-world"),
        GCI_CATALOG: "",
      });
      await pulumi("stack", "init", "dev");
      const fail = (...args: string[]) =>
        pulumi(...args).then(
          () => {
            throw new Error(`pulumi ${args.join(" ")} succeeded`);
          },
          (e: { stdout: string; stderr: string }) => e.stdout + e.stderr,
        );
      const location = world.state.catalog;
      expect(
        await fail("import", TYPE, "legacy", `nosuch@${location}`, "--yes", "--generate-code=false"),
      ).toContain(`no VM group "nosuch" is in the catalog ${location}`);
      // No world named, none in the default place: the error says how to name one.
      const noCatalog = await fail("import", TYPE, "legacy", "nosuch", "--yes", "--generate-code=false");
      expect(noCatalog).toContain("names no catalog, $GCI_CATALOG is unset and no world runs in");
      // The message says it all: no stack trace around it.
      expect(noCatalog).not.toContain("at importTarget");
      const image = "pulumi-nodejs:dynamic/gci:Image";
      expect(
        await fail("import", image, "web", `${imageDigest}@${location}`, "--yes", "--generate-code=false"),
      ).toContain("gci:Image cannot be imported (only VirtualMachineGroup can)");
      const state = JSON.parse((await pulumi("stack", "export")).stdout) as {
        deployment: { resources?: { type: string }[] };
      };
      expect((state.deployment.resources ?? []).filter((r) => r.type.includes("gci:"))).toEqual([]);
    });

    it("adopts a group with the adopt argument, then previews no changes and destroys it", async () => {
      const id = `adopt-${process.pid}`;
      const [first] = await startOutside(id);
      project = tempProject(
        "adopt",
        program({ target: 'region: "eu"', count: 1, extra: `, adopt: ${JSON.stringify(id)}` }),
      );
      const up = summaryOf<{
        summary: { resourceChanges: Record<string, number> };
        outputs: { requestId: string; vmIds: string[] };
      }>(await project.gci(["stack", "up", "--json"]));
      expect(up.summary.resourceChanges).toMatchObject({ create: 2 });
      expect(up.outputs).toEqual({ requestId: id, vmIds: [first] });
      await previewsNothingThenDestroys(project, id);
    });
  });

  it("destroys everything the stacks made: no VM, process, group, placement or image left", async () => {
    const run = await app.run("destroy", appConfig);
    expect(summaryOf<UpSummary>(run).summary.resourceChanges).toMatchObject({ delete: 4 });
    const snap = await worldSnapshot(world);
    expect(snap).toEqual({ images: [], placements: [], groups: [], vms: [], daemonVms: [] });
    const daemons = new Set(world.state.datacenters.map((d) => d.pid));
    expect(processesMentioning(world.dir).filter((pid) => !daemons.has(pid))).toEqual([]);
    summaryOf(await platform.run("destroy", { worldDir: world.dir }));
    const catalog = await world.catalog();
    try {
      expect(await catalog.listDatacenters()).toEqual([]);
    } finally {
      await catalog.close();
    }
  });
});
