import { randomUUID } from "crypto";
import Database from "better-sqlite3";
import * as grpc from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import { ClusterClient } from "../../../provider/common/client";
import { runGci } from "../../support/engine";
import { processImage } from "../../support/guest";
import { testWorld, TestWorld } from "../../support/world";

/**
 * Every call a cluster manager forwards to the datacenter that owns its subject goes through
 * one helper with one error mapping. A VM or group recorded in a datacenter the catalog does
 * not know is NOT_FOUND naming that datacenter and the known ones (not INTERNAL, not a bare
 * "not in the catalog"); and a stopping cluster manager reports NOT_SERVING to a health watcher.
 */
describe("forwarding to the owning datacenter", () => {
  let world: TestWorld;
  let client: ClusterClient;

  beforeAll(async () => {
    const image = await processImage();
    world = await testWorld({ regions: { eu: ["eu-1"], us: ["us-1"] } });
    const push = await runGci(["image", "push", image.file, "--dc", "eu-1", "--world", world.dir, "--json"]);
    expect(push.code).toBe(0);
    // A group and a VM recorded in "lost-1", which has no datacenter record.
    const db = new Database(world.state.catalog.slice("sqlite:".length));
    try {
      db.pragma("busy_timeout = 5000");
      db.prepare(
        "INSERT INTO vm_groups (request_id, datacenter, digest, count, vcpus, memory_mib, created_at) VALUES ('lost-group', 'lost-1', ?, 1, 1, 256, 0)",
      ).run(image.digest);
      db.prepare(
        "INSERT INTO vms (id, request_id, datacenter, digest, state, addresses, updated_at) VALUES ('proc-00000000bb-0', 'lost-group', 'lost-1', ?, 'running', '{}', 0)",
      ).run(image.digest);
    } finally {
      db.close();
    }
    client = new ClusterClient(world.dc("eu-1").endpoint, { deadlineMs: 10_000 });
  }, 300_000);

  afterAll(async () => {
    client?.close();
    await world?.stop();
  });

  const calls: [string, () => Promise<unknown>][] = [
    ["GetVmLogs", () => client.getVmLogs("proc-00000000bb-0")],
    ["RestartVm", () => client.restartVm(randomUUID(), "proc-00000000bb-0")],
    ["StopVms", () => client.stopVms(randomUUID(), "lost-group")],
    ["ScaleVms", () => client.scaleVms(randomUUID(), "lost-group", 2)],
  ];

  it.each(calls)(
    "%s of a subject in an unknown datacenter is NOT_FOUND naming it and the known ones",
    async (_n, call) => {
      const outcome = await call().then(
        () => ({ code: "OK", message: "" }),
        (e: { code?: string; message: string }) => ({ code: e.code, message: e.message }),
      );
      expect(outcome.code).toBe("NOT_FOUND");
      expect(outcome.message).toContain('"lost-1"');
      expect(outcome.message).toMatch(/known: eu-1, us-1/);
    },
  );

  it("a health watcher sees NOT_SERVING when the cluster manager stops", async () => {
    const Health = grpc.makeGenericClientConstructor(healthService, "Health");
    const health = new Health(world.dc("us-1").endpoint, grpc.credentials.createInsecure());
    const seen: string[] = [];
    const watch = (health as unknown as Record<string, CallableFunction>).watch({
      service: "",
    }) as grpc.ClientReadableStream<{
      status: string;
    }>;
    watch.on("data", (m: { status: string }) => seen.push(m.status));
    // The stream ends with an error when the daemon goes: that is expected here.
    watch.on("error", () => undefined);
    try {
      const until = Date.now() + 30_000;
      while (!seen.includes("SERVING") && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      expect(seen).toContain("SERVING");
      // SIGUSR2: a graceful stop that keeps instances (see provider/cluster/main.ts).
      process.kill(world.dc("us-1").pid, "SIGUSR2");
      const deadline = Date.now() + 30_000;
      while (!seen.includes("NOT_SERVING") && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 50));
      expect(seen).toContain("NOT_SERVING");
    } finally {
      watch.cancel();
      health.close();
    }
  }, 60_000);
});
