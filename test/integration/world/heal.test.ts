import { randomUUID } from "crypto";
import * as fs from "fs";
import * as net from "net";
import * as path from "path";
import { ClusterClient } from "../../../provider/common/client";
import { DatacenterProcess, isAlive, readWorld, WorldState } from "../../../provider/world";
import { instancePid, push, startGroup } from "../../security/crash-support";
import { runGci } from "../../support/engine";
import { processImage } from "../../support/guest";
import { TestWorld, testWorld, until } from "../../support/world";

/**
 * `gci world up` on a world that is partly down restarts only what is down, on the endpoint it
 * had; `gci datacenter restart` restarts one datacenter and its instances keep running. All
 * through the real `gci` CLI and real cluster managers with real process instances.
 */
describe("healing a world", () => {
  let world: TestWorld;
  let digest: string;

  beforeAll(async () => {
    const image = await processImage();
    world = await testWorld({ regions: { us: ["us-1", "us-2"], eu: ["eu-1"] } });
    digest = await push(world, "us-2", image.file);
    expect(await push(world, "eu-1", image.file)).toBe(digest);
  }, 300_000);

  // Each test starts from what world.json records, whatever the one before left.
  beforeEach(() => void recorded());

  afterAll(async () => {
    await world?.stop();
  });

  /** The world as world.json records it now (the CLI rewrote it), also given to the test world. */
  function recorded(): WorldState {
    const state = readWorld(world.dir);
    if (!state) throw new Error("world.json is gone");
    world.state = state;
    return state;
  }

  const byName = (state: WorldState): Record<string, DatacenterProcess> =>
    Object.fromEntries(state.datacenters.map((d) => [d.name, d]));

  async function health(endpoint: string): Promise<string> {
    const client = new ClusterClient(endpoint);
    try {
      return await client.checkHealth(5000);
    } finally {
      client.close();
    }
  }

  /** One running process instance in `dc`: its id, process id and HTTP address. */
  async function runInstance(dc: string): Promise<{ id: string; pid: number; address: string }> {
    const requestId = randomUUID();
    const op = await startGroup(world, dc, digest, 1, requestId);
    const id = op.start_vms!.vm_ids[0];
    const vm = (await world.client(dc).listVms(requestId)).find((v) => v.id === id)!;
    return { id, pid: instancePid(world, dc, id)!, address: vm.addresses[0].address };
  }

  /** A server of this test listening on 127.0.0.1:`port`, or undefined while that port is taken. */
  function listenOn(port: number): Promise<net.Server | undefined> {
    return new Promise((resolve) => {
      const server = net.createServer();
      server.once("error", () => resolve(undefined));
      server.listen({ host: "127.0.0.1", port }, () => resolve(server));
    });
  }

  async function answers(address: string, id: string): Promise<boolean> {
    const response = await fetch(`http://${address}/`, { signal: AbortSignal.timeout(10_000) });
    return (await response.text()).includes(id);
  }

  it("world up right after kill -9 of one daemon restarts only that one, on its endpoint; the others and their instances are untouched", async () => {
    const instance = await runInstance("us-2");
    const before = byName(recorded());
    world.kill("eu-1");
    // At once: the killed daemon may still be exiting, or a zombie.
    const up = await runGci(["world", "up", "--world", world.dir]);
    expect(up.stderr).toBe("");
    expect(up.code).toBe(0);

    const after = byName(recorded());
    for (const dc of ["us-1", "us-2"]) expect(after[dc]).toEqual(before[dc]);
    expect(after["eu-1"].pid).not.toBe(before["eu-1"].pid);
    expect(after["eu-1"].endpoint).toBe(before["eu-1"].endpoint);
    expect(await health(after["eu-1"].endpoint)).toBe("SERVING");
    expect(instancePid(world, "us-2", instance.id)).toBe(instance.pid);
    expect(isAlive(instance.pid)).toBe(true);
    expect(await answers(instance.address, instance.id)).toBe(true);
    expect(up.stdout).toMatch(/eu-1 .* restarted/);
    expect(up.stdout).toMatch(/us-1 .* kept/);
    expect(up.stdout).toMatch(/us-2 .* kept/);
  });

  it("world status shows a killed daemon as DOWN, and exits 1", async () => {
    world.kill("eu-1");
    const status = await runGci(["world", "status", "--world", world.dir, "--json"]);
    expect(status.code).toBe(1);
    const rows = JSON.parse(status.stdout) as { name: string; health: string }[];
    expect(Object.fromEntries(rows.map((r) => [r.name, r.health]))).toEqual({
      "us-1": "SERVING",
      "us-2": "SERVING",
      "eu-1": "DOWN",
    });
    expect((await runGci(["world", "up", "--world", world.dir])).code).toBe(0);
    expect((await runGci(["world", "status", "--world", world.dir])).code).toBe(0);
  });

  it("world up kills and restarts a daemon that lives but does not answer (SIGSTOP), on its endpoint", async () => {
    const before = byName(recorded());
    process.kill(before["us-1"].pid, "SIGSTOP");
    let up = { code: -1, stdout: "", stderr: "" };
    try {
      up = await runGci(["world", "up", "--world", world.dir]);
    } finally {
      // Already killed by world up on the new code; the old code left it stopped.
      if (isAlive(before["us-1"].pid)) process.kill(before["us-1"].pid, "SIGCONT");
    }
    expect(up.code).toBe(0);
    const after = byName(recorded());
    expect(after["us-2"]).toEqual(before["us-2"]);
    expect(after["eu-1"]).toEqual(before["eu-1"]);
    expect(after["us-1"].pid).not.toBe(before["us-1"].pid);
    expect(after["us-1"].endpoint).toBe(before["us-1"].endpoint);
    expect(await health(after["us-1"].endpoint)).toBe("SERVING");
    expect(up.stdout).toMatch(/us-1 .* restarted \(pid \d+ does not answer/);
  });

  it("gci datacenter restart restarts one daemon on its endpoint; its own instance keeps running and is adopted", async () => {
    const instance = await runInstance("eu-1");
    const before = byName(recorded());
    const restart = await runGci(["datacenter", "restart", "eu-1", "--world", world.dir]);
    expect(restart.stderr).toBe("");
    expect(restart.code).toBe(0);
    expect(restart.stdout).toContain(`pid ${before["eu-1"].pid} stopped`);

    const after = byName(recorded());
    expect(after["eu-1"].pid).not.toBe(before["eu-1"].pid);
    expect(after["eu-1"].endpoint).toBe(before["eu-1"].endpoint);
    expect(isAlive(before["eu-1"].pid)).toBe(false);
    expect(after["us-1"]).toEqual(before["us-1"]);
    expect(after["us-2"]).toEqual(before["us-2"]);
    // The old daemon stopped gracefully, keeping its instances.
    expect(world.logs("eu-1").some((l) => l.event === "stopping" && l.instances === "keep")).toBe(true);
    expect(instancePid(world, "eu-1", instance.id)).toBe(instance.pid);
    expect(isAlive(instance.pid)).toBe(true);
    expect(await answers(instance.address, instance.id)).toBe(true);
    const ls = await runGci(["vm", "ls", "--world", world.dir, "--json"]);
    const listed = (JSON.parse(ls.stdout) as { vms: { id: string; state: string }[] }).vms.find(
      (v) => v.id === instance.id,
    );
    expect(listed?.state).toBe("running");
  });

  it("gci datacenter restart of an unknown name lists the world's datacenters", async () => {
    const restart = await runGci(["datacenter", "restart", "mars-1", "--world", world.dir]);
    expect(restart.code).toBe(1);
    expect(restart.stderr).toContain('datacenter "mars-1" is not in the world');
    expect(restart.stderr).toContain("us-1, us-2, eu-1");
  });

  it("world up refuses another shape for a running world and says how to change it", async () => {
    const before = recorded();
    const up = await runGci(["world", "up", "--world", world.dir, "--region", "us:1"]);
    expect(up.code).toBe(1);
    expect(up.stderr).toContain("gci world down");
    expect(up.stderr).toContain("not us: us-1");
    expect(recorded()).toEqual(before);
  });

  it("world up names the datacenter and its port when another program took it, leaves the others running and world.json whole", async () => {
    const before = byName(recorded());
    const port = Number(before["us-1"].endpoint.split(":")[1]);
    world.kill("us-1");
    await until(() => !isAlive(before["us-1"].pid), 10_000, "the killed cluster manager to exit");
    // A killed process's leader thread is a zombie before its last thread has closed its files:
    // the port comes free a moment later.
    const squatter = await until(() => listenOn(port), 10_000, `port ${port} to come free`);
    try {
      const up = await runGci(["world", "up", "--world", world.dir]);
      expect(up.code).toBe(1);
      expect(up.stderr).toContain(`datacenter us-1 restarts on its endpoint 127.0.0.1:${port}`);
      expect(up.stderr).toContain(`port ${port} is taken by another program`);
      expect(up.stdout).toMatch(/us-2 .* kept/);
      const file = fs.readFileSync(path.join(world.dir, "world.json"), "utf8");
      expect(byName(JSON.parse(file) as WorldState)).toEqual(before);
      expect(await health(before["us-2"].endpoint)).toBe("SERVING");
      expect(await health(before["eu-1"].endpoint)).toBe("SERVING");
    } finally {
      await new Promise((resolve) => squatter.close(resolve));
    }
    // The port free again, the next world up brings us-1 back where it was.
    const up = await runGci(["world", "up", "--world", world.dir]);
    expect(up.code).toBe(0);
    const after = byName(recorded());
    expect(after["us-1"].endpoint).toBe(before["us-1"].endpoint);
    expect(await health(after["us-1"].endpoint)).toBe("SERVING");
  });
});
