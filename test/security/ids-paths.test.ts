import { randomUUID } from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import Database from "better-sqlite3";
import { waitForOperation } from "../../provider/common/client";
import { runGci } from "../support/engine";
import { processImage } from "../support/guest";
import { processesMentioning } from "../support/procs";
import { testWorld, TestWorld, until } from "../support/world";

/**
 * Ids read back from the catalog become paths under a cluster manager's data folder, and the
 * cluster manager runs as root. The attacker here can write the world's SQLite catalog file
 * (any local process can today): it plants VM records whose ids climb out of the run folder,
 * and a handle whose log file is elsewhere. Canaries are folders and files this test made.
 */
describe("ids that become paths", () => {
  let world: TestWorld;
  let tmp: string;
  let catalogFile: string;
  let digest: string;
  const realRequest = randomUUID();

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gci-sec-ids-"));
    const image = await processImage();
    digest = image.digest;
    world = await testWorld({ regions: { eu: ["eu-1"] } });
    catalogFile = world.state.catalog.slice("sqlite:".length);
    const push = await runGci(["image", "push", image.file, "--dc", "eu-1", "--world", world.dir, "--json"]);
    expect(push.code).toBe(0);
    const client = world.client("eu-1");
    const op = await client.startVms({
      request_id: realRequest,
      image_digest: digest,
      datacenter: "eu-1",
      count: 1,
    });
    await waitForOperation(client, op, { timeoutMs: 120_000 });
  }, 300_000);

  afterAll(async () => {
    await world?.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  /** What an attacker with write access to the catalog file does: rows straight into SQLite. */
  function forge(sql: string, ...params: unknown[]): void {
    const db = new Database(catalogFile);
    try {
      db.pragma("busy_timeout = 5000");
      db.prepare(sql).run(...params);
    } finally {
      db.close();
    }
  }

  function forgeGroup(requestId: string): void {
    forge(
      "INSERT INTO vm_groups (request_id, datacenter, digest, count, vcpus, memory_mib, created_at) VALUES (?, 'eu-1', ?, 1, 1, 256, 0)",
      requestId,
      digest,
    );
  }

  function forgeVm(id: string, requestId: string, datacenter = "eu-1"): void {
    forge(
      "INSERT INTO vms (id, request_id, datacenter, digest, state, addresses, updated_at) VALUES (?, ?, ?, ?, 'running', '{}', 0)",
      id,
      requestId,
      datacenter,
      digest,
    );
  }

  /** A folder of the test's with one file in it; returns the folder and the file. */
  function canary(name: string): { dir: string; file: string; text: string } {
    const dir = path.join(tmp, name);
    fs.mkdirSync(dir, { recursive: true });
    const text = `canary ${name} ${randomUUID()}`;
    fs.writeFileSync(path.join(dir, "canary.txt"), text);
    return { dir, file: path.join(dir, "canary.txt"), text };
  }

  /** The id that, joined to eu-1's run folder, names `target`. */
  function climbingId(target: string): string {
    return path.relative(path.join(world.dc("eu-1").dataDir, "instances"), target);
  }

  it("StopVms of a group holding a VM whose id climbs out of the run folder leaves the canary alone", async () => {
    const c = canary("stop");
    const id = climbingId(c.dir);
    expect(id.startsWith("..")).toBe(true);
    forgeGroup("forged-stop");
    forgeVm(id, "forged-stop");
    const client = world.client("eu-1");
    const op = await client.stopVms(randomUUID(), "forged-stop");
    await waitForOperation(client, op, { timeoutMs: 30_000 });
    expect(fs.existsSync(c.file)).toBe(true);
    // The bad record is named in the cluster manager's log, not silently dropped.
    expect(
      world.logs("eu-1").some((l) => l.event === "catalog.bad_record" && String(l.error).includes(id)),
    ).toBe(true);
  });

  it("GetVmLogs refuses a VM id that climbs out of the run folder and never returns the canary", async () => {
    const c = canary("logs-climb");
    fs.writeFileSync(
      path.join(c.dir, "instance.json"),
      JSON.stringify({
        id: "x",
        kind: "process",
        pid: process.pid,
        startTime: "1",
        runDir: c.dir,
        logFile: c.file,
        addresses: {},
      }),
    );
    const id = climbingId(c.dir);
    forgeVm(id, "forged-logs");
    const answer = await world
      .client("eu-1")
      .getVmLogs(id)
      .then(
        (text) => ({ text }),
        (e: { code?: string; message: string }) => ({ code: e.code, message: e.message }),
      );
    expect(answer).not.toHaveProperty("text", expect.stringContaining(c.text));
    expect(answer).toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringContaining("VM id") });
  });

  it("GetVmLogs refuses a planted handle whose log file is not the run folder's own", async () => {
    const c = canary("logs-planted");
    const id = "proc-0123456789-0";
    const runDir = path.join(world.dc("eu-1").dataDir, "instances", id);
    fs.mkdirSync(runDir, { recursive: true });
    fs.writeFileSync(
      path.join(runDir, "instance.json"),
      JSON.stringify({
        id,
        kind: "process",
        pid: process.pid,
        startTime: "1",
        runDir,
        logFile: c.file,
        addresses: {},
      }),
    );
    forgeVm(id, "forged-planted");
    const answer = await world
      .client("eu-1")
      .getVmLogs(id)
      .then(
        (text) => ({ text }),
        (e: { code?: string; message: string }) => ({ code: e.code, message: e.message }),
      );
    expect(answer).not.toHaveProperty("text", expect.stringContaining(c.text));
    expect(answer).toMatchObject({ code: "DATA_LOSS", message: expect.stringContaining(c.file) });
  });

  it("GetVmLogs does not follow a log file planted as a symbolic link to the canary", async () => {
    const c = canary("logs-symlink");
    const id = "proc-0123456789-1";
    const runDir = path.join(world.dc("eu-1").dataDir, "instances", id);
    const logFile = path.join(runDir, "output.log");
    fs.mkdirSync(runDir, { recursive: true });
    fs.writeFileSync(
      path.join(runDir, "instance.json"),
      JSON.stringify({
        id,
        kind: "process",
        pid: process.pid,
        startTime: "1",
        runDir,
        logFile,
        addresses: {},
      }),
    );
    fs.symlinkSync(c.file, logFile);
    forgeVm(id, "forged-symlink");
    const answer = await world
      .client("eu-1")
      .getVmLogs(id)
      .then(
        (text) => ({ text }),
        (e: { code?: string; message: string }) => ({ code: e.code, message: e.message }),
      );
    expect(answer).not.toHaveProperty("text", expect.stringContaining(c.text));
    expect(answer).toMatchObject({ code: "DATA_LOSS", message: expect.stringContaining("symbolic link") });
  });

  it("a forged record read back is refused by name, and the real VMs still list, log and stop", async () => {
    forgeVm("proc-abcdefabcd-0", "../../forged", "eu-1");
    // A VM whose own record is fine, in a group whose record is not.
    forge(
      "INSERT INTO vm_groups (request_id, datacenter, digest, count, vcpus, memory_mib, created_at) VALUES ('forged-bad-group', '../eu-1', ?, 1, 1, 256, 0)",
      digest,
    );
    forgeVm("proc-bbbbbbbbbb-0", "forged-bad-group");
    const client = world.client("eu-1");
    await expect(client.getVm("proc-abcdefabcd-0")).rejects.toMatchObject({
      code: "DATA_LOSS",
      message: expect.stringContaining('"proc-abcdefabcd-0"'),
    });
    const listed = await client.listVms();
    expect(listed.map((v) => v.request_id)).toContain(realRequest);
    expect(listed.map((v) => v.id)).not.toContain("proc-abcdefabcd-0");
    const real = listed.find((v) => v.request_id === realRequest)!;
    expect(real.state).toBe("running");
    expect(typeof (await client.getVmLogs(real.id))).toBe("string");
    const stop = await client.stopVms(randomUUID(), realRequest);
    await waitForOperation(client, stop, { timeoutMs: 60_000 });
    expect(await client.listVms(realRequest)).toEqual([]);
  });

  it("a cluster manager restarts despite a run folder holding a corrupt handle, and names it in its log", async () => {
    const id = "proc-0123456789-2";
    const runDir = path.join(world.dc("eu-1").dataDir, "instances", id);
    fs.mkdirSync(runDir, { recursive: true });
    fs.writeFileSync(path.join(runDir, "instance.json"), "{ not a handle");
    forgeVm(id, "forged-corrupt");
    world.kill("eu-1");
    await world.restart("eu-1");
    expect(await world.client("eu-1").checkHealth()).toBe("SERVING");
    expect(world.logs("eu-1").some((l) => l.event === "instance.recover_failed" && l.id === id)).toBe(true);
  });

  it("gci world down with a VM record whose id climbs out of the run folder leaves the canary alone", async () => {
    const c = canary("down");
    forgeVm(climbingId(c.dir), "forged-down");
    const down = await runGci(["world", "down", "--world", world.dir]);
    expect(down.code).toBe(0);
    await until(
      () => processesMentioning(world.dir).length === 0,
      30_000,
      "the world's cluster managers to end",
    );
    expect(fs.existsSync(c.file)).toBe(true);
  });
});
