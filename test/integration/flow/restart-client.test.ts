import { randomUUID } from "crypto";
import * as fs from "fs";
import * as net from "net";
import * as os from "os";
import * as path from "path";
import { ClusterClient } from "../../../provider/common/client";
import { replicaHandlers, ReplicaInputs } from "../../../provider/pulumi/dynamic/replica";
import { CATALOG_OUTPUT_SCHEMA } from "../../../provider/pulumi/dynamic/topology";
import { runGci } from "../../support/engine";
import { makeImage, testWorld, TestWorld, until } from "../../support/world";

const RATE = 16 * 1024 * 1024; // bytes/s: an 80 MiB image takes about 5 s, long enough to restart midway.

/**
 * Clients follow a datacenter, not an endpoint: when the cluster manager they wait on is
 * killed (kill -9) and comes back on another port, they find it again in the catalog, send
 * the forgotten request again (same request id) and finish, with exactly the VMs asked for.
 */
describe("clients survive a restart of the cluster manager they talk to", () => {
  let world: TestWorld;
  let tmp: string;
  const clients: ClusterClient[] = [];

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gci-restart-client-"));
    world = await testWorld({ regions: { us: ["us-1"], eu: ["eu-1"] } }, [
      "--max-transfer-rate",
      String(RATE),
    ]);
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    await world?.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  async function pushed(name: string) {
    const image = await makeImage(tmp, { name, sizeMiB: 80 });
    const push = await runGci(["image", "push", image.file, "--dc", "us-1", "--world", world.dir, "--json"]);
    expect(push.code).toBe(0);
    return image;
  }

  /** Waits until eu-1 has received part of the image, not all of it. */
  async function midTransfer(digest: string) {
    const catalog = await world.catalog();
    try {
      await until(
        async () => {
          const p = await catalog.getPlacement(digest, "eu-1");
          if (p?.state === "present") throw new Error(`the transfer of ${digest} ended before the kill`);
          return p && p.bytesDone > 0;
        },
        60_000,
        `the transfer of ${digest} into eu-1 to start`,
      );
    } finally {
      await catalog.close();
    }
  }

  /**
   * kill -9 of a datacenter, then a restart on a new port, recorded in the catalog (`gci world up`
   * keeps the endpoint; a new one is what a datacenter moved to another address looks like, and
   * what proves the client re-resolves).
   */
  async function restart(dc: string) {
    const before = world.dc(dc).endpoint;
    world.kill(dc);
    await world.restart(dc, undefined, { newPort: true });
    return { before, after: await catalogEndpoint(dc) };
  }
  const restartEu1 = () => restart("eu-1");

  /** A datacenter client of us-1 whose first endpoint is `first`; it counts re-resolutions. */
  function us1Client(first: string) {
    const resolved: string[] = [];
    const client = new ClusterClient(first, {
      datacenter: {
        name: "us-1",
        resolve: async () => {
          const endpoint = (await catalogEndpoint("us-1"))!;
          resolved.push(endpoint);
          return endpoint;
        },
      },
      retry: { totalMs: 20_000 },
    });
    clients.push(client);
    return { client, resolved };
  }

  async function catalogEndpoint(dc: string): Promise<string | undefined> {
    const catalog = await world.catalog();
    try {
      return (await catalog.getDatacenter(dc))?.endpoint;
    } finally {
      await catalog.close();
    }
  }

  it("an idempotent call to a stale endpoint finds the datacenter in the catalog and succeeds", async () => {
    const { client, resolved } = us1Client(await deadEndpoint());
    expect(await client.listVms()).toEqual([]);
    expect(resolved).toEqual([world.dc("us-1").endpoint]);
    expect(client.endpoint).toBe(world.dc("us-1").endpoint);
  });

  it("INVALID_ARGUMENT and NOT_FOUND from a live cluster manager are not retried", async () => {
    const { client, resolved } = us1Client(world.dc("us-1").endpoint);
    await expect(
      client.startVms({
        request_id: "",
        image_digest: `sha256:${"0".repeat(64)}`,
        datacenter: "us-1",
        count: 1,
      }),
    ).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    await expect(client.getImage(`sha256:${"0".repeat(64)}`)).rejects.toMatchObject({ code: "NOT_FOUND" });
    await expect(client.waitOperation("start-nobody", 100)).rejects.toMatchObject({ code: "NOT_FOUND" });
    expect(resolved).toEqual([]);
  });

  it("`gci vm start --via eu-1` exits 0 with the VMs after eu-1 restarted mid-transfer", async () => {
    const image = await pushed("cli");
    const requestId = randomUUID();
    // Started now, awaited after the restart: the CLI waits on eu-1 meanwhile.
    const cli = runGci(
      [
        "vm",
        "start",
        "--image",
        image.digest,
        "--dc",
        "eu-1",
        "--via",
        "eu-1",
        "--count",
        "2",
        "--size",
        "nano",
        "--request-id",
        requestId,
        "--timeout",
        "300",
        "--world",
        world.dir,
      ],
      300_000,
      { ...process.env, GCI_RETRY_SECONDS: "90" },
    );
    await midTransfer(image.digest);
    const { before, after } = await restartEu1();
    const run = await cli;
    expect({ code: run.code, stderr: run.code === 0 ? "" : run.stderr }).toEqual({ code: 0, stderr: "" });
    expect(after).not.toBe(before);
    expect(run.stderr).toMatch(/eu-1 unavailable, retrying \(\d+ s\)\.\.\./);
    expect(run.stdout).toContain(`request ${requestId}: 2 running in eu-1`);
    const catalog = await world.catalog();
    try {
      const vms = (await catalog.listVms({ requestId })).filter((v) => v.state === "running");
      expect(vms).toHaveLength(2);
      for (const vm of vms) expect(run.stdout).toContain(vm.id);
    } finally {
      await catalog.close();
    }
  });

  it("the ImageReplica handler's create finishes after eu-1 restarted while it waited", async () => {
    const image = await pushed("replica");
    const inputs: ReplicaInputs = {
      catalog: {
        schema: CATALOG_OUTPUT_SCHEMA,
        catalog: world.state.catalog,
        regions: ["us", "eu"],
        datacenters: world.state.datacenters.map((d) => ({
          name: d.name,
          region: d.region,
          endpoint: d.endpoint,
        })),
      },
      image: image.digest,
      datacenter: "eu-1",
      timeoutSeconds: 300,
      requestKey: "app/dev/gci:ImageReplica//restart",
      generation: 0,
    };
    const previous = process.env.GCI_RETRY_SECONDS;
    process.env.GCI_RETRY_SECONDS = "90";
    try {
      const created = replicaHandlers.create(inputs);
      // Awaited below; a rejection meanwhile (the old behaviour) is the test's failure then.
      created.catch(() => undefined);
      await midTransfer(image.digest);
      const { before, after } = await restartEu1();
      expect(after).not.toBe(before);
      const result = await created;
      expect(result.id).toBe(`${image.digest}@eu-1`);
      expect(result.outs.transfer).toMatchObject({ destination: "eu-1" });
    } finally {
      if (previous === undefined) delete process.env.GCI_RETRY_SECONDS;
      else process.env.GCI_RETRY_SECONDS = previous;
    }
    const catalog = await world.catalog();
    try {
      expect((await catalog.getPlacement(image.digest, "eu-1"))?.state).toBe("present");
    } finally {
      await catalog.close();
    }
  });

  // The report: the request finished (start.done) but the CLI's last call went to the
  // --via datacenter's old port. Here --via is the transfer's source, restarted midway.
  it("`gci vm start --via us-1 --dc eu-1` exits 0 after us-1 (the source) restarted mid-transfer", async () => {
    const image = await pushed("via-source");
    const requestId = randomUUID();
    const cli = runGci(
      [
        "vm",
        "start",
        "--image",
        image.digest,
        "--dc",
        "eu-1",
        "--via",
        "us-1",
        "--count",
        "1",
        "--size",
        "nano",
        "--request-id",
        requestId,
        "--timeout",
        "300",
        "--world",
        world.dir,
      ],
      300_000,
      { ...process.env, GCI_RETRY_SECONDS: "90" },
    );
    await midTransfer(image.digest);
    const { before, after } = await restart("us-1");
    expect(after).not.toBe(before);
    const run = await cli;
    expect({ code: run.code, stderr: run.code === 0 ? "" : run.stderr }).toEqual({ code: 0, stderr: "" });
    expect(run.stdout).toContain(`request ${requestId}: 1 running in eu-1`);
    const catalog = await world.catalog();
    try {
      expect((await catalog.listVms({ requestId })).filter((v) => v.state === "running")).toHaveLength(1);
    } finally {
      await catalog.close();
    }
  }, 300_000);
});

/** A 127.0.0.1 endpoint nothing listens on (a port bound, then let go). */
async function deadEndpoint(): Promise<string> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return `127.0.0.1:${port}`;
}
