import { spawn } from "child_process";
import * as fs from "fs";
import { engineEnv } from "../../provider/pulumi/engine/env";
import { isSameProcess, procStat } from "../../provider/common/proc";
import { tempProject, TempProject } from "../support/engine";
import { until } from "../support/world";
import { killTree, pulumiCli } from "./support";

/** A program whose one dynamic resource takes two minutes to create: an update to kill midway. */
const SLOW_PROGRAM = `import * as pulumi from "@pulumi/pulumi";
const slow: pulumi.dynamic.ResourceProvider = {
  async create() {
    await new Promise((resolve) => setTimeout(resolve, 120_000));
    return { id: "slow", outs: {} };
  },
};
new pulumi.dynamic.Resource(slow, "slow", {});
`;

/** Processes running GCI's plugin hosts (scripts/engine-shim execs node on them), with start times. */
function pluginHosts(): { pid: number; startTime: string; host: string }[] {
  const found = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let cmdline: string;
    try {
      cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8");
    } catch {
      continue; // Gone while we looked.
    }
    const host = /(language-host|dynamic-host)\.js/.exec(cmdline)?.[1];
    const stat = procStat(Number(entry));
    if (host !== undefined && stat !== undefined)
      found.push({ pid: Number(entry), startTime: stat.startTime, host });
  }
  return found;
}

/**
 * The real pulumi CLI killed with SIGKILL mid-update (the engine alone, as an OOM kill or a
 * cancelled CI job does it): the language host and the dynamic-provider host it started
 * exit by themselves instead of running on under PID 1.
 */
describe("plugin hosts of a killed pulumi up", () => {
  let project: TempProject;
  let up: { pid: number } | undefined;

  beforeAll(() => {
    project = tempProject("orphans", SLOW_PROGRAM);
  });

  afterAll(async () => {
    if (up) killTree(up.pid);
    for (const p of pluginHosts().filter((p) => p.pid !== process.pid)) killTree(p.pid);
    await pulumiCli(project.dir, project.stateDir)("cancel", "--yes").catch(() => undefined); // No lock left: fine.
    project.remove();
  });

  it("exit once the engine that started them is gone", async () => {
    const before = new Set(pluginHosts().map((p) => p.pid));
    await pulumiCli(project.dir, project.stateDir)("stack", "init", "dev");
    const child = spawn("pulumi", ["up", "--yes", "--skip-preview", "--non-interactive"], {
      cwd: project.dir,
      env: { ...process.env, ...engineEnv({ stateDir: project.stateDir }) },
      detached: true,
      stdio: "ignore",
    });
    up = { pid: child.pid! };
    const exited = new Promise((resolve) => child.on("exit", resolve));
    // Both hosts run once the slow resource is being created.
    const hosts = await until(
      () => {
        const mine = pluginHosts().filter((p) => !before.has(p.pid));
        return new Set(mine.map((p) => p.host)).size === 2 ? mine : undefined;
      },
      60_000,
      "the language host and the dynamic-provider host to run",
    );
    process.kill(child.pid!, "SIGKILL");
    await exited;
    await until(
      () => hosts.every((h) => !isSameProcess(h.pid, h.startTime)),
      15_000,
      `plugin hosts ${hosts.map((h) => `${h.host} (pid ${h.pid})`).join(", ")} to exit after the engine was killed`,
    );
  }, 120_000);
});
