import { Socket, connect } from "net";
import { SERVER_OPTIONS } from "../../provider/common/rpc/proto";
import { testWorld, type TestWorld } from "../support/world";

/**
 * Keepalive on a cluster manager's gRPC server (provider/common/rpc/proto.ts): a client that connects
 * and then goes quiet is pinged after grpc.keepalive_time_ms, and one that never answers the
 * ping is disconnected after grpc.keepalive_timeout_ms, so a dead peer's connection (and what it
 * holds) is freed. The client is a raw TCP socket speaking just enough HTTP/2: the preface, an
 * empty SETTINGS frame and the ACK of the server's SETTINGS; it never answers a PING.
 */

const KEEPALIVE_TIME_MS = SERVER_OPTIONS["grpc.keepalive_time_ms"] as number;
const KEEPALIVE_TIMEOUT_MS = SERVER_OPTIONS["grpc.keepalive_timeout_ms"] as number;
/** How long the test waits for each event: the configured time, doubled, plus 5 s. */
const PING_WITHIN_MS = KEEPALIVE_TIME_MS * 2 + 5_000;
const CLOSED_WITHIN_MS = KEEPALIVE_TIMEOUT_MS * 2 + 5_000;

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
const FRAME_HEADER_BYTES = 9;
const SETTINGS = 0x4;
const PING = 0x6;
const ACK = 0x1;

/** An HTTP/2 frame with an empty payload, on stream 0. */
function emptyFrame(type: number, flags: number): Buffer {
  const frame = Buffer.alloc(FRAME_HEADER_BYTES);
  frame[3] = type;
  frame[4] = flags;
  return frame;
}

/** A raw HTTP/2 client: which frames it has received, and whether the server closed it. */
class SilentClient {
  readonly received: { type: number; flags: number }[] = [];
  closed = false;
  private readonly socket: Socket;
  private pending = Buffer.alloc(0);
  private readonly waiters: (() => void)[] = [];

  constructor(host: string, port: number) {
    this.socket = connect(port, host, () => {
      this.socket.write(Buffer.concat([PREFACE, emptyFrame(SETTINGS, 0)]));
    });
    this.socket.on("data", (data: Buffer) => this.read(data));
    this.socket.on("close", () => {
      this.closed = true;
      this.wake();
    });
    // A reset by the server is a close too; "close" follows and records it.
    this.socket.on("error", (e) => console.log(JSON.stringify({ socketError: e.message })));
  }

  get pings(): number {
    return this.received.filter((f) => f.type === PING && (f.flags & ACK) === 0).length;
  }

  /** Waits until `done()` holds or `ms` pass; returns `done()`. */
  async until(done: () => boolean, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!done() && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(500, Math.max(deadline - Date.now(), 0)));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return done();
  }

  destroy(): void {
    this.socket.destroy();
  }

  private read(data: Buffer): void {
    this.pending = Buffer.concat([this.pending, data]);
    while (this.pending.length >= FRAME_HEADER_BYTES) {
      const length = this.pending.readUIntBE(0, 3);
      if (this.pending.length < FRAME_HEADER_BYTES + length) break;
      const type = this.pending[3];
      const flags = this.pending[4];
      this.pending = this.pending.subarray(FRAME_HEADER_BYTES + length);
      this.received.push({ type, flags });
      if (type === SETTINGS && (flags & ACK) === 0) this.socket.write(emptyFrame(SETTINGS, ACK));
    }
    this.wake();
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}

describe("keepalive on a cluster manager's gRPC server", () => {
  let world: TestWorld;
  let client: SilentClient | undefined;

  beforeAll(async () => {
    world = await testWorld({ regions: { us: ["us-1"] } });
  });

  afterEach(() => client?.destroy());

  afterAll(async () => {
    await world?.stop();
  });

  function connectSilent(): SilentClient {
    const url = new URL(`http://${world.dc("us-1").endpoint}`);
    return new SilentClient(url.hostname, Number(url.port));
  }

  test(
    `an idle connection is pinged within ${PING_WITHIN_MS / 1000} s (keepalive time ${KEEPALIVE_TIME_MS / 1000} s)`,
    async () => {
      client = connectSilent();
      expect(await client.until(() => client!.received.some((f) => f.type === SETTINGS), 10_000)).toBe(true);
      const pinged = await client.until(() => client!.pings > 0 || client!.closed, PING_WITHIN_MS);
      expect({ pinged, pings: client.pings }).toEqual({ pinged: true, pings: 1 });
    },
    PING_WITHIN_MS + 20_000,
  );

  test(
    `a connection that never answers the ping is closed within ${CLOSED_WITHIN_MS / 1000} s of it`,
    async () => {
      client = connectSilent();
      expect(await client.until(() => client!.pings > 0 || client!.closed, PING_WITHIN_MS)).toBe(true);
      expect(client.pings).toBe(1);
      const closed = await client.until(() => client!.closed, CLOSED_WITHIN_MS);
      expect({ closedByServer: closed }).toEqual({ closedByServer: true });
    },
    PING_WITHIN_MS + CLOSED_WITHIN_MS + 20_000,
  );
});
