import { randomUUID } from "crypto";
import Database from "better-sqlite3";
import { ClusterClient } from "../../provider/common/client";
import { runGci } from "../support/engine";
import { processImage } from "../support/guest";
import { testWorld, TestWorld } from "../support/world";

/**
 * A cluster manager forwards a call to the datacenter that owns its subject, at the endpoint
 * the catalog names. A forged datacenter record whose endpoint is the forwarder's own (under
 * another name) sends every forward back to it: without a hop limit, each hop calls itself again
 * until deadlines end it, opening a connection per hop. Each forwarded RPC must instead fail at
 * once, naming the chain of datacenters it went through.
 */
describe("forwarding loops", () => {
  let world: TestWorld;
  let digest: string;
  let client: ClusterClient;
  // Short, so the unfixed loop fails the test in bounded time instead of hanging it.
  const DEADLINE_MS = 8000;

  beforeAll(async () => {
    const image = await processImage();
    digest = image.digest;
    world = await testWorld({ regions: { eu: ["eu-1"] } });
    const push = await runGci(["image", "push", image.file, "--dc", "eu-1", "--world", world.dir, "--json"]);
    expect(push.code).toBe(0);
    // The attacker writes the catalog file: "ghost-1" answers at eu-1's own endpoint.
    const db = new Database(world.state.catalog.slice("sqlite:".length));
    try {
      db.pragma("busy_timeout = 5000");
      db.prepare(
        "INSERT INTO datacenters (name, region, endpoint, vcpus, memory_mib, heartbeat_at) VALUES ('ghost-1', 'eu', ?, 64, 65536, 0)",
      ).run(world.dc("eu-1").endpoint);
      db.prepare(
        "INSERT INTO vm_groups (request_id, datacenter, digest, count, vcpus, memory_mib, created_at) VALUES ('ghost-group', 'ghost-1', ?, 1, 1, 256, 0)",
      ).run(digest);
      db.prepare(
        "INSERT INTO vms (id, request_id, datacenter, digest, state, addresses, updated_at) VALUES ('proc-00000000aa-0', 'ghost-group', 'ghost-1', ?, 'running', '{}', 0)",
      ).run(digest);
    } finally {
      db.close();
    }
    client = new ClusterClient(world.dc("eu-1").endpoint, { deadlineMs: DEADLINE_MS });
  }, 300_000);

  afterAll(async () => {
    client?.close();
    await world?.stop();
  });

  const calls: [string, () => Promise<unknown>][] = [
    [
      "StartVms",
      () =>
        client.startVms({ request_id: randomUUID(), image_digest: digest, datacenter: "ghost-1", count: 1 }),
    ],
    ["ScaleVms", () => client.scaleVms(randomUUID(), "ghost-group", 1)],
    ["StopVms", () => client.stopVms(randomUUID(), "ghost-group")],
    ["RestartVm", () => client.restartVm(randomUUID(), "proc-00000000aa-0")],
    ["GetVmLogs", () => client.getVmLogs("proc-00000000aa-0")],
    ["ReplicateImage", () => client.replicateImage(randomUUID(), digest, "ghost-1")],
  ];

  it.each(calls)("%s forwarded back to its sender fails at once, naming the chain", async (_name, call) => {
    const before = world.logs("eu-1").filter((l) => l.event === "rpc.forwarded").length;
    const outcome = await call().then(
      () => ({ code: "OK", message: "" }),
      (e: { code?: string; message: string }) => ({ code: e.code, message: e.message }),
    );
    expect(outcome).toMatchObject({
      code: "FAILED_PRECONDITION",
      message: expect.stringContaining(`eu-1 -> ghost-1 (${world.dc("eu-1").endpoint}) -> eu-1`),
    });
    // One forward happened (eu-1 to "ghost-1"), and the second hop was refused: no loop.
    expect(world.logs("eu-1").filter((l) => l.event === "rpc.forwarded").length - before).toBe(1);
    // eu-1 still serves.
    expect(await client.checkHealth()).toBe("SERVING");
  });
});
