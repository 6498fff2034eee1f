/**
 * The sending side of the peer API (TransmitImage): the layout, then every chunk the receiver
 * does not hold, over a data socket (see socket-server.ts) or as Chunk messages.
 */
import type * as grpc from "@grpc/grpc-js";
import type { ChunkRef__Output } from "../../../schema/gen/gci/v1/ChunkRef";
import type { TransmitImageRequest__Output } from "../../../schema/gen/gci/v1/TransmitImageRequest";
import type { TransmitImageResponse } from "../../../schema/gen/gci/v1/TransmitImageResponse";
import { notFound, unavailable } from "../../common/errors";
import { toStatus } from "../../common/rpc/status";
import type { ImageStore } from "../../image";
import type { Logger } from "../log";
import { openDataSocket, write } from "./socket-server";
import type * as net from "net";

type TransmitCall = grpc.ServerWritableStream<TransmitImageRequest__Output, TransmitImageResponse>;
/** A chunk the receiver lacks: its index in the layout and its reference. */
type Wanted = [number, ChunkRef__Output];

/** What has gone out so far, throttled to `maxRate` bytes/s (0 = unlimited). */
class Sent {
  bytes = 0;
  chunks = 0;
  private readonly started = Date.now();

  constructor(private readonly maxRate: number) {}

  async add(size: number): Promise<void> {
    this.bytes += size;
    this.chunks++;
    if (this.maxRate > 0) await throttle(this.started, this.bytes, this.maxRate);
  }
}

/**
 * The sending side of the peer API: streams an image's layout, then every chunk the receiver
 * does not hold — over a data socket when the receiver asks for one (see peer.proto), else as
 * Chunk messages. `maxRate` (bytes/s, 0 = unlimited) throttles it, for tests and shared links.
 * `host` is where the data socket listens: the host of this cluster manager's endpoint.
 */
export async function transmit(
  store: ImageStore,
  log: Logger,
  call: TransmitCall,
  maxRate: number,
  host: string,
): Promise<void> {
  const req = call.request;
  try {
    const entry = await store.get(req.digest);
    if (!entry)
      throw notFound(`image ${req.digest} is not stored here: ask a datacenter whose placement is "present"`);
    const held = new Set(req.held_chunks);
    await write(call, {
      layout: {
        digest: entry.digest,
        name: entry.manifest.name,
        size_bytes: entry.sizeBytes,
        chunks: entry.chunks,
      },
    });
    const wanted = [...entry.chunks.entries()].filter(([, ref]) => !held.has(ref.sha256));
    const sent = new Sent(maxRate);
    if (req.data_socket && wanted.length > 0) await sendOverSocket(store, call, host, wanted, sent);
    else await sendAsMessages(store, call, wanted, sent);
    log.info("transmit.sent", {
      requestId: req.request_id,
      digest: req.digest,
      to: req.receiver,
      bytes: sent.bytes,
      chunks: sent.chunks,
      skipped: entry.chunks.length - sent.chunks,
      dataSocket: req.data_socket,
      cancelled: call.cancelled,
    });
    call.end();
  } catch (e) {
    log.warn("transmit.failed", { requestId: req.request_id, digest: req.digest, error: String(e) });
    // An 'error' event is how grpc-js sends a status on a server stream; destroy() would drop it,
    // and the receiver would wait for the status forever.
    call.emit("error", Object.assign(new Error(toStatus(e).details), toStatus(e)));
  }
}

/** The wanted chunks back to back on a data socket, each read from the store while the last goes out. */
async function sendOverSocket(
  store: ImageStore,
  call: TransmitCall,
  host: string,
  wanted: readonly Wanted[],
  sent: Sent,
): Promise<void> {
  const socket = await openDataSocket(call, host);
  try {
    let next: Promise<Buffer> | undefined = store.readChunk(wanted[0][1].sha256);
    for (let i = 0; i < wanted.length && !call.cancelled && !socket.destroyed; i++) {
      const data: Buffer = await next!;
      next = i + 1 < wanted.length ? store.readChunk(wanted[i + 1][1].sha256) : undefined;
      if (!socket.write(data)) await drained(socket);
      await sent.add(data.length);
    }
    // A chunk read ahead for a transfer that stopped (cancelled, socket closed) is never sent, so
    // its read failing changes nothing; the catch only keeps it from going unhandled.
    next?.catch(() => undefined);
    // Flushed, or closed by the receiver (which ended or cancelled the transfer).
    await new Promise<void>((resolve) => {
      socket.once("close", resolve);
      socket.end(resolve);
    });
  } finally {
    socket.destroy();
  }
}

/** The wanted chunks as Chunk messages on the gRPC stream (a receiver that asked for no data socket). */
async function sendAsMessages(
  store: ImageStore,
  call: TransmitCall,
  wanted: readonly Wanted[],
  sent: Sent,
): Promise<void> {
  for (const [index, ref] of wanted) {
    if (call.cancelled) break;
    const data = await store.readChunk(ref.sha256);
    await write(call, { chunk: { index, sha256: ref.sha256, data } });
    await sent.add(data.length);
  }
}

/** Resolves when the socket takes data again; rejects with why it closed (an error it was destroyed with). */
function drained(socket: net.Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    let failure: Error | undefined;
    const done = (e?: Error) => {
      socket.off("drain", done);
      socket.off("error", failed);
      socket.off("close", closed);
      if (e) reject(e);
      else resolve();
    };
    const failed = (e: Error) => {
      failure = e;
    };
    const closed = () => done(failure ?? unavailable("the receiver closed the data socket"));
    socket.once("drain", done);
    socket.once("error", failed);
    socket.once("close", closed);
  });
}

async function throttle(started: number, bytes: number, maxRate: number): Promise<void> {
  const due = started + (bytes / maxRate) * 1000;
  const wait = due - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
}
