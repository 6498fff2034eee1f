import { ChildProcess, spawn } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { ClusterClient } from "../../provider/common/client";
import { readWorld, stopWorld } from "../../provider/world";
import { isSameProcess, procStat } from "../../provider/common/proc";
import { runGci } from "../support/engine";

/**
 * world.json keeps each cluster manager's pid. After a reboot or a crash that pid may belong to
 * another program; `gci world up`/`down` must not signal it. The stranger here is a `sleep`
 * this test started, killed at the end.
 */
describe("world pids", () => {
  let dir: string;
  let stranger: ChildProcess;
  let strangerStart: string;

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "gci-sec-pids-"));
    stranger = spawn("sleep", ["300"], { stdio: "ignore" });
    await new Promise((resolve) => stranger.once("spawn", resolve));
    strangerStart = procStat(stranger.pid!)!.startTime;
  });

  afterEach(async () => {
    stranger.kill("SIGKILL");
    await stopWorld(dir, 2000);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** A world.json as an earlier `gci world up` left it, naming the stranger's pid for eu-1. */
  function staleWorld(extra: Record<string, unknown> = {}): void {
    const dcDir = path.join(dir, "dcs", "eu-1");
    fs.mkdirSync(path.join(dcDir, "data"), { recursive: true });
    const state = {
      dir,
      catalog: `sqlite:${path.join(dir, "catalog.db")}`,
      spec: { regions: { eu: ["eu-1"] } },
      datacenters: [
        {
          name: "eu-1",
          region: "eu",
          endpoint: "127.0.0.1:1",
          pid: stranger.pid,
          dataDir: path.join(dcDir, "data"),
          logFile: path.join(dcDir, "log.jsonl"),
          ...extra,
        },
      ],
    };
    fs.writeFileSync(path.join(dir, "world.json"), JSON.stringify(state, null, 2));
  }

  it("world down with an old world.json (no start time) naming another program's pid does not signal it", async () => {
    staleWorld();
    const down = await runGci(["world", "down", "--world", dir]);
    expect(isSameProcess(stranger.pid!, strangerStart)).toBe(true);
    expect(down.code).toBe(0);
    expect(down.stdout).toContain(`cluster manager of eu-1 (pid ${stranger.pid}) is gone`);
    expect(readWorld(dir)).toBeUndefined();
  });

  it("world down with a recorded start time that the pid's process does not have does not signal it", async () => {
    staleWorld({ startTime: String(Number(strangerStart) + 1) });
    const down = await runGci(["world", "down", "--world", dir]);
    expect(isSameProcess(stranger.pid!, strangerStart)).toBe(true);
    expect(down.stdout).toContain(`cluster manager of eu-1 (pid ${stranger.pid}) is gone`);
  });

  it("world up does not take another program for its cluster manager: it starts one, leaving the program alone", async () => {
    staleWorld();
    const up = await runGci(["world", "up", "--world", dir, "--config", writeConfig(), "--json"]);
    expect(up.code).toBe(0);
    const state = readWorld(dir)!;
    const eu1 = state.datacenters.find((d) => d.name === "eu-1")!;
    expect(eu1.pid).not.toBe(stranger.pid);
    expect(isSameProcess(stranger.pid!, strangerStart)).toBe(true);
    const client = new ClusterClient(eu1.endpoint);
    try {
      expect(await client.checkHealth()).toBe("SERVING");
    } finally {
      client.close();
    }
    // The new record carries the daemon's start time, so the next down can tell it from a stranger.
    expect(eu1).toHaveProperty("startTime", procStat(eu1.pid)!.startTime);
  });

  it("world down with an old world.json (no start time) still stops its real cluster manager, known by its command line", async () => {
    const up = await runGci(["world", "up", "--world", dir, "--config", writeConfig(), "--json"]);
    expect(up.code).toBe(0);
    const state = readWorld(dir)!;
    const daemon = state.datacenters[0];
    const daemonStart = procStat(daemon.pid)!.startTime;
    const old = { ...state, datacenters: state.datacenters.map(({ startTime: _, ...rest }) => rest) };
    fs.writeFileSync(path.join(dir, "world.json"), JSON.stringify(old, null, 2));
    const down = await runGci(["world", "down", "--world", dir]);
    expect(down.stdout).toContain("stopped 1 cluster managers");
    expect(isSameProcess(daemon.pid, daemonStart)).toBe(false);
  });

  function writeConfig(): string {
    const file = path.join(dir, "config.json");
    fs.writeFileSync(file, JSON.stringify({ regions: { eu: ["eu-1"] } }));
    return file;
  }
});
