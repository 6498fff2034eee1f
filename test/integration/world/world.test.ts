import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { readWorld, startWorld, stopWorld } from "../../../provider/world";
import { processesMentioning } from "../../support/procs";
import { runGci } from "../../support/engine";
import { until } from "../../support/world";

/** `gci world up` is all or nothing: a datacenter that cannot start takes the others down with it. */
describe("starting a world", () => {
  let dir: string;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "gci-worldup-"));
  });

  afterEach(async () => {
    await stopWorld(dir, 2000);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("leaves no cluster manager running when one datacenter cannot start", async () => {
    // eu-1's folder is a file, so its cluster manager cannot get a data folder.
    fs.mkdirSync(path.join(dir, "dcs"), { recursive: true });
    fs.writeFileSync(path.join(dir, "dcs", "eu-1"), "not a folder");
    await expect(startWorld(dir, { regions: { us: ["us-1", "us-2"], eu: ["eu-1"] } })).rejects.toThrow(
      /eu-1/,
    );
    expect(readWorld(dir)).toBeUndefined();
    await until(
      () => processesMentioning(dir).length === 0,
      10_000,
      "no cluster manager of the failed world",
    );
  });

  it("returns the running world when asked to start it again", async () => {
    const first = await startWorld(dir, { regions: { us: ["us-1"] } });
    const again = await startWorld(dir, { regions: { us: ["us-1"] } });
    expect(again.datacenters.map((d) => d.pid)).toEqual(first.datacenters.map((d) => d.pid));
  });

  it("takes its regions from repeated --region flags", async () => {
    const run = await runGci(["world", "up", "--world", dir, "--region", "us:2", "--region", "eu", "--json"]);
    expect(run.code).toBe(0);
    expect(readWorld(dir)?.datacenters.map((d) => `${d.region}/${d.name}`)).toEqual([
      "us/us-1",
      "us/us-2",
      "eu/eu-1",
    ]);
  });

  it("refuses a malformed --region flag, naming it, and starts nothing", async () => {
    const run = await runGci(["world", "up", "--world", dir, "--region", "us:0"]);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain('--region "us:0" is not <name>[:<datacenters>]');
    expect(readWorld(dir)).toBeUndefined();
  });
});
