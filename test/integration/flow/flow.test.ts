import { createHash, randomUUID } from "crypto";
import * as net from "net";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { execFile } from "child_process";
import { promisify } from "util";
import { ClusterClient, waitForOperation } from "../../../provider/common/client";
import { runGci } from "../../support/engine";
import { makeImage, testWorld, TestWorld } from "../../support/world";

const execFileP = promisify(execFile);

/**
 * The defining flow across real cluster-manager processes: an image stored in us-1; VMs
 * requested in region eu through us-1; us-1 forwards; eu-1 looks the image up in the
 * catalog, asks us-1 to transmit, verifies, stores and records it.
 */
describe("the defining flow across a world of three regions and four datacenters", () => {
  let world: TestWorld;
  let tmp: string;
  let image: { file: string; digest: string; sizeBytes: number };

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gci-flow-"));
    world = await testWorld({ regions: { us: ["us-1", "us-2"], eu: ["eu-1"], ap: ["ap-1"] } });
    image = await makeImage(tmp, { name: "web", sizeMiB: 20 });
  });

  afterAll(async () => {
    await world?.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("stores a pushed image in us-1 and records it in the catalog", async () => {
    const run = await runGci(["image", "push", image.file, "--dc", "us-1", "--world", world.dir, "--json"]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const pushed = JSON.parse(run.stdout);
    expect(pushed).toMatchObject({
      digest: image.digest,
      name: "web",
      size_bytes: image.sizeBytes,
      datacenters: ["us-1"],
    });
    const catalog = await world.catalog();
    expect((await catalog.getPlacement(image.digest, "us-1"))?.state).toBe("present");
    await catalog.close();
  });

  it("forwards a start for region eu to eu-1, which pulls the image from us-1", async () => {
    const requestId = randomUUID();
    const us1 = world.client("us-1");
    const op = await us1.startVms({
      request_id: requestId,
      image_digest: image.digest,
      region: "eu",
      count: 2,
    });
    expect(op.datacenter).toBe("eu-1");
    const done = await waitForOperation(world.client("eu-1"), op, { timeoutMs: 60_000 });
    expect(done.error).toBe("");
    expect(done.start_vms).toMatchObject({
      datacenter: "eu-1",
      region: "eu",
      transfer: { digest: image.digest, source: "us-1", destination: "eu-1", bytes: image.sizeBytes },
    });

    // The catalog: present in both, the VM group recorded in eu-1.
    const catalog = await world.catalog();
    expect((await catalog.getPlacement(image.digest, "eu-1"))?.state).toBe("present");
    expect(await catalog.getVmGroup(requestId)).toMatchObject({
      datacenter: "eu-1",
      digest: image.digest,
      count: 2,
    });
    await catalog.close();
    expect((await us1.getImage(image.digest)).datacenters).toEqual(["eu-1", "us-1"]);

    // The logs, step by step: forwarded, looked up, transmit requested, streamed, verified, recorded.
    const mine = (dc: string) => world.logs(dc).filter((l) => l.requestId === requestId);
    expect(mine("us-1").map((l) => l.event)).toEqual([
      "start.forwarded",
      "transmit.requested",
      "transmit.sent",
    ]);
    expect(mine("us-1")[0]).toMatchObject({ to: "eu-1" });
    expect(mine("us-1")[2]).toMatchObject({
      to: "eu-1",
      bytes: image.sizeBytes,
      skipped: 0,
      dataSocket: true,
    });
    const events = mine("eu-1").map((l) => l.event);
    expect(events.slice(0, 6)).toEqual([
      "start.accepted",
      "image.lookup",
      "transfer.requested",
      "transfer.streamed",
      "transfer.verified",
      "placement.recorded",
    ]);
    // Then the two instances boot, and the start is done.
    expect(events.slice(6).sort()).toEqual([
      "instance.booting",
      "instance.booting",
      "instance.running",
      "instance.running",
      "start.done",
    ]);
    expect(events.at(-1)).toBe("start.done");
    expect(mine("eu-1")[1]).toMatchObject({ here: false, presentIn: ["us-1"] });
    expect(mine("eu-1")[2]).toMatchObject({ source: "us-1" });
  });

  it("transmits over a data socket only to the holder of its token, or in-band when not asked", async () => {
    const us1 = world.client("us-1");
    type Part = {
      layout?: { chunks: { sha256: string; size: number }[]; size_bytes: number | string };
      data_socket?: { address: string; token: string };
      chunk?: { index: number; sha256: string; data: Buffer };
    };
    const read = async (dataSocket: boolean) => {
      const parts: Part[] = [];
      const stream = us1.transmitImage({
        digest: image.digest,
        held_chunks: [],
        receiver: "test",
        request_id: randomUUID(),
        data_socket: dataSocket,
      });
      let bytes: Promise<Buffer> | undefined;
      for await (const part of stream as AsyncIterable<Part>) {
        parts.push(part);
        if (part.data_socket) {
          const [host, port] = part.data_socket.address.split(":");
          // A wrong token: the sender closes that connection without a byte.
          expect(await readSocket(host, Number(port), "0".repeat(32))).toEqual(Buffer.alloc(0));
          bytes = readSocket(host, Number(port), part.data_socket.token);
        }
      }
      return { parts, bytes: await bytes };
    };
    const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

    const raw = await read(true);
    const layout = raw.parts[0].layout!;
    expect(raw.parts.map((p) => Object.keys(p).find((k) => p[k as keyof Part]))).toEqual([
      "layout",
      "data_socket",
    ]);
    // Every chunk, back to back in layout order: each hashes to its name, the whole to the digest.
    let at = 0;
    for (const c of layout.chunks) {
      expect(sha(raw.bytes!.subarray(at, at + c.size))).toBe(c.sha256);
      at += c.size;
    }
    expect(at).toBe(Number(layout.size_bytes));
    expect(`sha256:${sha(raw.bytes!)}`).toBe(image.digest);

    const inBand = await read(false);
    expect(inBand.parts.slice(1).map((p) => p.chunk!.sha256)).toEqual(layout.chunks.map((c) => c.sha256));
  });

  it("repeating a start request returns the same operation and transfers nothing", async () => {
    const requestId = randomUUID();
    const us1 = world.client("us-1");
    const first = await us1.startVms({
      request_id: requestId,
      image_digest: image.digest,
      datacenter: "eu-1",
      count: 1,
    });
    await waitForOperation(world.client("eu-1"), first, { timeoutMs: 30_000 });
    const again = await us1.startVms({
      request_id: requestId,
      image_digest: image.digest,
      datacenter: "eu-1",
      count: 1,
    });
    expect(again.id).toBe(first.id);
    expect(again.done).toBe(true);
    expect(
      world.logs("eu-1").filter((l) => l.requestId === requestId && l.event === "start.accepted"),
    ).toHaveLength(1);
  });

  it("ten concurrent starts for one image into one datacenter cause exactly one transfer", async () => {
    const ids = Array.from({ length: 10 }, () => randomUUID());
    const us1 = world.client("us-1");
    const ops = await Promise.all(
      ids.map((id) =>
        us1.startVms({ request_id: id, image_digest: image.digest, datacenter: "ap-1", count: 1 }),
      ),
    );
    const ap1 = world.client("ap-1");
    await Promise.all(ops.map((op) => waitForOperation(ap1, op, { timeoutMs: 60_000 })));
    // Any datacenter holding the image may be the source (us-1 or eu-1 by now): count them all.
    const sent = ["us-1", "us-2", "eu-1"].flatMap((dc) =>
      world.logs(dc).filter((l) => l.event === "transmit.sent" && l.to === "ap-1"),
    );
    expect(sent).toHaveLength(1);
    expect(world.logs("ap-1").filter((l) => l.event === "transfer.requested")).toHaveLength(1);
  });

  it("a start for a region picks its datacenter with the most free capacity", async () => {
    // us-1 already runs nothing, us-2 nothing either: take vCPUs on us-1, then ask for region us.
    const us1 = world.client("us-1");
    const busy = await us1.startVms({
      request_id: randomUUID(),
      image_digest: image.digest,
      datacenter: "us-1",
      count: 4,
      vcpus: 2,
    });
    await waitForOperation(us1, busy, { timeoutMs: 30_000 });
    const op = await world
      .client("eu-1")
      .startVms({ request_id: randomUUID(), image_digest: image.digest, region: "us", count: 1 });
    expect(op.datacenter).toBe("us-2");
  });

  it("answers bad requests with status codes that name the value, and keeps serving", async () => {
    const us1 = world.client("us-1");
    const cases: [Parameters<ClusterClient["startVms"]>[0], string, RegExp][] = [
      [
        { request_id: "r1", image_digest: "sha256:nope", region: "eu", count: 1 },
        "INVALID_ARGUMENT",
        /"sha256:nope"/,
      ],
      [
        { request_id: "r2", image_digest: image.digest, region: "eu", count: 0 },
        "INVALID_ARGUMENT",
        /count 0/,
      ],
      [
        { request_id: "r3", image_digest: image.digest, region: "mars", count: 1 },
        "NOT_FOUND",
        /region "mars"/,
      ],
      [{ request_id: "r4", image_digest: image.digest, datacenter: "eu-9", count: 1 }, "NOT_FOUND", /"eu-9"/],
      [
        { request_id: "r5", image_digest: "sha256:" + "0".repeat(64), region: "eu", count: 1 },
        "NOT_FOUND",
        /gci image push/,
      ],
      [
        { request_id: "", image_digest: image.digest, region: "eu", count: 1 },
        "INVALID_ARGUMENT",
        /request_id/,
      ],
    ];
    for (const [req, code, message] of cases) {
      await expect(us1.startVms(req)).rejects.toMatchObject({
        code,
        message: expect.stringMatching(message),
      });
    }
    await expect(us1.getImage("sha256:" + "1".repeat(64))).rejects.toMatchObject({ code: "NOT_FOUND" });
    expect(await us1.checkHealth()).toBe("SERVING");
  });

  it("serves health and reflection to a gRPC client that is not ours (grpcurl)", async () => {
    const grpcurl = path.join(
      process.env.GCI_CACHE ?? path.join(os.homedir(), ".cache", "gci"),
      "grpcurl-v1.9.4",
      "bin",
      "grpcurl",
    );
    const endpoint = world.dc("us-1").endpoint;
    const services = (await execFileP(grpcurl, ["-plaintext", endpoint, "list"])).stdout;
    expect(services.split("\n")).toEqual(
      expect.arrayContaining(["gci.v1.ClusterManager", "gci.v1.Peer", "grpc.health.v1.Health"]),
    );
    const health = JSON.parse(
      (await execFileP(grpcurl, ["-plaintext", endpoint, "grpc.health.v1.Health/Check"])).stdout,
    );
    expect(health).toEqual({ status: "SERVING" });
    const listed = JSON.parse(
      (await execFileP(grpcurl, ["-plaintext", "-d", "{}", endpoint, "gci.v1.ClusterManager/ListImages"]))
        .stdout,
    );
    expect(listed.images.map((i: { digest: string }) => i.digest)).toContain(image.digest);
  });

  it("shows health, images and transfers in gci world status", async () => {
    const run = await runGci(["world", "status", "--world", world.dir, "--json"]);
    expect(run.code).toBe(0);
    const rows = JSON.parse(run.stdout) as { name: string; health: string; images: number }[];
    expect(rows.map((r) => [r.name, r.health])).toEqual([
      ["us-1", "SERVING"],
      ["us-2", "SERVING"],
      ["eu-1", "SERVING"],
      ["ap-1", "SERVING"],
    ]);
    expect(rows.find((r) => r.name === "eu-1")?.images).toBe(1);
  });

  it("lists images and transfers, and refuses to remove an image VM groups use", async () => {
    const ls = await runGci(["image", "ls", "--world", world.dir, "--json"]);
    expect(ls.code).toBe(0);
    expect(JSON.parse(ls.stdout)).toEqual([
      expect.objectContaining({
        digest: image.digest,
        name: "web",
        datacenters: ["ap-1", "eu-1", "us-1", "us-2"],
      }),
    ]);
    const transfers = await runGci(["transfers", "--all", "--world", world.dir, "--json"]);
    const rows = JSON.parse(transfers.stdout) as { datacenter: string; state: string; bytesDone: number }[];
    expect(
      rows
        .filter((r) => r.state === "present")
        .map((r) => r.datacenter)
        .sort(),
    ).toEqual(["ap-1", "eu-1", "us-1", "us-2"]);
    expect(rows.every((r) => r.bytesDone === image.sizeBytes)).toBe(true);
    const rm = await runGci(["image", "rm", image.digest, "--dc", "ap-1", "--world", world.dir]);
    expect(rm.code).toBe(1);
    expect(rm.stderr).toMatch(
      /FAILED_PRECONDITION: image sha256:\w+ is used by VM groups .* in ap-1: stop them first/,
    );
  });
});

/** Connects, sends `token`, and resolves with every byte the other side sends until it closes. */
function readSocket(host: string, port: number, token: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    const socket = net.connect({ host, port }, () => socket.write(token));
    socket.on("data", (d) => parts.push(d));
    socket.on("error", reject);
    socket.on("close", () => resolve(Buffer.concat(parts)));
  });
}
