import { execFile } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { promisify } from "util";

const execFileP = promisify(execFile);
const GCI = path.join(__dirname, "..", "..", "bin", "gci");

/** `gci env` run from a project folder outside the checkout, as a user runs it, with only `env` set. */
async function gciEnv(
  cwd: string,
  env: Record<string, string>,
  args: string[] = [],
): Promise<Map<string, string>> {
  const { stdout } = await execFileP(process.execPath, [GCI, "env", ...args], {
    cwd,
    env: { PATH: process.env.PATH ?? "", ...env },
  });
  const exports = new Map<string, string>();
  for (const m of stdout.matchAll(/^export ([A-Z_]+)='([^']*)'$/gm)) exports.set(m[1], m[2]);
  return exports;
}

/** Issue 11 item 7: Pulumi state goes to a documented per-user folder, never into the checkout. */
describe("gci env: where Pulumi state is kept", () => {
  let home: string;
  let project: string;
  beforeAll(() => {
    home = fs.mkdtempSync(path.join(os.tmpdir(), "gci-home-"));
    project = fs.mkdtempSync(path.join(os.tmpdir(), "gci-project-"));
  });
  afterAll(() => {
    fs.rmSync(home, { recursive: true, force: true });
    fs.rmSync(project, { recursive: true, force: true });
  });

  it("defaults to ~/.local/state/gci, wherever it is run from", async () => {
    const e = await gciEnv(project, { HOME: home });
    const state = path.join(home, ".local", "state", "gci");
    expect(e.get("PULUMI_BACKEND_URL")).toBe(`file://${path.join(state, "backend")}`);
    expect(e.get("PULUMI_HOME")).toBe(path.join(state, "pulumi-home"));
    // Programs the engine runs then find the same folder (their default world is in it).
    expect(e.get("GCI_STATE")).toBe(state);
    expect(fs.statSync(path.join(state, "backend")).isDirectory()).toBe(true);
  });

  it("follows $XDG_STATE_HOME when it is absolute, and ignores a relative one as the XDG rule says", async () => {
    const xdg = path.join(home, "xdg");
    expect((await gciEnv(project, { HOME: home, XDG_STATE_HOME: xdg })).get("PULUMI_HOME")).toBe(
      path.join(xdg, "gci", "pulumi-home"),
    );
    expect((await gciEnv(project, { HOME: home, XDG_STATE_HOME: "rel/xdg" })).get("PULUMI_HOME")).toBe(
      path.join(home, ".local", "state", "gci", "pulumi-home"),
    );
  });

  it("takes $GCI_STATE over both, and --state over everything, relative to the folder it runs in", async () => {
    const chosen = path.join(home, "chosen");
    expect((await gciEnv(project, { HOME: home, GCI_STATE: chosen })).get("PULUMI_HOME")).toBe(
      path.join(chosen, "pulumi-home"),
    );
    const e = await gciEnv(project, { HOME: home, GCI_STATE: chosen }, ["--state", "state"]);
    expect(e.get("PULUMI_BACKEND_URL")).toBe(
      `file://${path.join(fs.realpathSync(project), "state", "backend")}`,
    );
  });
});
