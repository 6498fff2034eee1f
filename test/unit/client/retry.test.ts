import { randomUUID } from "crypto";
import * as net from "net";
import { Readable } from "stream";
import { ClusterClient, RetryEvent, retryBoundMs } from "../../../provider/common/client";

/** A 127.0.0.1 endpoint nothing listens on (a port bound, then let go). */
async function deadEndpoint(): Promise<string> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return `127.0.0.1:${port}`;
}

/** A datacenter client of "us-1" that records every re-resolution and retry. */
function datacenterClient(first: string, resolveTo: () => string, totalMs: number) {
  const resolved: string[] = [];
  const retries: RetryEvent[] = [];
  const client = new ClusterClient(first, {
    datacenter: {
      name: "us-1",
      resolve: async () => {
        const endpoint = resolveTo();
        resolved.push(endpoint);
        return endpoint;
      },
    },
    retry: { totalMs, onRetry: (e) => retries.push(e) },
  });
  return { client, resolved, retries };
}

describe("the retry policy of a datacenter client (against endpoints nothing answers)", () => {
  const clients: ClusterClient[] = [];
  afterAll(() => clients.forEach((c) => c.close()));

  it("fails an idempotent call after the bound, naming the datacenter, every endpoint tried and the fix", async () => {
    const [first, second] = [await deadEndpoint(), await deadEndpoint()];
    const { client, resolved, retries } = datacenterClient(first, () => second, 1500);
    clients.push(client);
    const err = await client.listVms().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "UNAVAILABLE" });
    const message = (err as Error).message;
    expect(message).toContain("datacenter us-1 did not answer listVms for 1.5 s");
    expect(message).toContain(`endpoints tried: ${first}, ${second}`);
    expect(message).toContain("`gci world status`");
    expect(message).toContain("`gci world up`");
    // It did retry, re-resolving before each new attempt, and said so each time.
    expect(resolved.length).toBeGreaterThanOrEqual(2);
    expect(retries.length).toBe(resolved.length);
    expect(retries.every((r) => r.datacenter === "us-1" && r.method === "listVms")).toBe(true);
    expect(client.endpoint).toBe(second);
  });

  it("never retries RestartVm (a repeat after a restart restarts the VM again)", async () => {
    const { client, resolved, retries } = datacenterClient(await deadEndpoint(), () => "unused", 30_000);
    clients.push(client);
    await expect(client.restartVm(randomUUID(), "vm-1")).rejects.toMatchObject({ code: "UNAVAILABLE" });
    expect(resolved).toEqual([]);
    expect(retries).toEqual([]);
  });

  it("never retries an upload (a one-pass stream)", async () => {
    const { client, resolved } = datacenterClient(await deadEndpoint(), () => "unused", 30_000);
    clients.push(client);
    const source = Readable.from([Buffer.alloc(1024)]);
    await expect(client.uploadImage(source, { request_id: randomUUID(), name: "x" })).rejects.toMatchObject({
      code: "UNAVAILABLE",
    });
    expect(resolved).toEqual([]);
  });
});

describe("the retry bound", () => {
  const saved = process.env.GCI_RETRY_SECONDS;
  afterEach(() => {
    if (saved === undefined) delete process.env.GCI_RETRY_SECONDS;
    else process.env.GCI_RETRY_SECONDS = saved;
  });

  it("is 30 s by default, $GCI_RETRY_SECONDS when set, the option above both", () => {
    delete process.env.GCI_RETRY_SECONDS;
    expect(retryBoundMs()).toBe(30_000);
    process.env.GCI_RETRY_SECONDS = "5";
    expect(retryBoundMs()).toBe(5000);
    expect(retryBoundMs({ totalMs: 100 })).toBe(100);
  });

  it("refuses a $GCI_RETRY_SECONDS that is not a number of seconds, naming it and the fix", () => {
    process.env.GCI_RETRY_SECONDS = "soon";
    expect(() => retryBoundMs()).toThrow(
      /GCI_RETRY_SECONDS="soon" is not a number of seconds: set it to e\.g\. 30/,
    );
  });
});
