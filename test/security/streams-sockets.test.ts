import { randomUUID } from "crypto";
import { createReadStream, mkdtempSync, rmSync } from "fs";
import * as http2 from "http2";
import * as net from "net";
import { tmpdir } from "os";
import { join } from "path";
import { packDirectory } from "../../provider/image";
import { STREAM_IDLE_MS } from "../../provider/cluster/transfer";
import { MAX_CONCURRENT_STREAMS } from "../../provider/common/rpc/proto";
import { QEMU_MANIFEST, makeImageDir } from "../unit/image/helpers";
import { makeImage, testWorld, type TestWorld } from "../support/world";

/**
 * What a caller can hold open on a real cluster manager: a data-socket connection that never
 * presents its token, and HTTP/2 streams on one connection.
 */

/** How long the test waits for the cluster manager to close a silent data-socket connection. */
const CLOSED_WITHIN_MS = 30_000;

describe("connections a caller holds open", () => {
  let world: TestWorld;
  let tmp: string;
  let digest: string;

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), "gci-sockets-"));
    world = await testWorld({ regions: { us: ["us-1"] } });
    const dir = await makeImageDir(join(tmp, "img"));
    await packDirectory(dir, QEMU_MANIFEST, join(tmp, "img.tar"));
    const image = await world
      .client("us-1")
      .uploadImage(createReadStream(join(tmp, "img.tar")), { request_id: randomUUID(), name: "" });
    digest = image.digest;
  });

  afterAll(async () => {
    await world?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  test("a data-socket connection that presents no token is closed within seconds", async () => {
    const stream = world.client("us-1").transmitImage({
      digest,
      held_chunks: [],
      receiver: "test",
      request_id: randomUUID(),
      data_socket: true,
    });
    stream.on("error", () => undefined); // cancelled below; its CANCELLED status is expected
    let address = "";
    for await (const msg of stream) {
      if (msg.data_socket) {
        address = msg.data_socket.address;
        break;
      }
    }
    expect(address).not.toBe("");
    const colon = address.lastIndexOf(":");
    const silent = net.connect({ host: address.slice(0, colon), port: Number(address.slice(colon + 1)) });
    const closedAfter = await new Promise<number | "still open">((resolve) => {
      const started = Date.now();
      const timer = setTimeout(() => resolve("still open"), CLOSED_WITHIN_MS);
      silent.on("error", () => undefined); // a reset is a close too
      silent.once("close", () => {
        clearTimeout(timer);
        resolve(Date.now() - started);
      });
    });
    silent.destroy();
    stream.cancel();
    console.log(JSON.stringify({ silentDataSocketClosedAfterMs: closedAfter }));
    expect(closedAfter).not.toBe("still open");
  });

  test("a receiver that stops reading its data socket is cut off after the idle limit", async () => {
    // Large enough to fill the socket buffers between the two ends.
    const big = await makeImage(tmp, { name: "big", sizeMiB: 48 });
    await world
      .client("us-1")
      .uploadImage(createReadStream(big.file), { request_id: randomUUID(), name: "big" });
    const stream = world.client("us-1").transmitImage({
      digest: big.digest,
      held_chunks: [],
      receiver: "test",
      request_id: randomUUID(),
      data_socket: true,
    });
    const ended = new Promise<Error | "ended">((resolve) => {
      stream.on("error", (e) => resolve(e));
      stream.on("end", () => resolve("ended"));
    });
    let conn: net.Socket | undefined;
    stream.on("data", (msg: { data_socket?: { address: string; token: string } | null }) => {
      if (!msg.data_socket) return;
      const colon = msg.data_socket.address.lastIndexOf(":");
      conn = net.connect({
        host: msg.data_socket.address.slice(0, colon),
        port: Number(msg.data_socket.address.slice(colon + 1)),
      });
      conn.on("error", () => undefined); // the sender's reset is what this test waits for
      conn.write(msg.data_socket.token);
      conn.pause(); // and never read
    });
    let timer!: NodeJS.Timeout;
    const outcome = await Promise.race([
      ended,
      new Promise<"still sending">((resolve) => (timer = setTimeout(() => resolve("still sending"), 40_000))),
    ]);
    clearTimeout(timer);
    conn?.destroy();
    stream.cancel();
    expect(outcome).toBeInstanceOf(Error);
    expect((outcome as Error).message).toContain(
      `the receiver read nothing from the data socket for ${STREAM_IDLE_MS / 1000} s`,
    );
  }, 60_000);

  test(`the gRPC server allows ${MAX_CONCURRENT_STREAMS} concurrent streams per connection`, async () => {
    const session = http2.connect(`http://${world.dc("us-1").endpoint}`);
    try {
      const settings = await new Promise<http2.Settings>((resolve, reject) => {
        session.once("remoteSettings", resolve);
        session.once("error", reject);
      });
      expect(settings.maxConcurrentStreams).toBe(MAX_CONCURRENT_STREAMS);
    } finally {
      session.close();
    }
  });
});
