import { randomBytes, randomUUID, timingSafeEqual } from "crypto";
import { once } from "events";
import * as net from "net";
import * as grpc from "@grpc/grpc-js";
import type { ChunkRef__Output } from "../../schema/gen/gci/v1/ChunkRef";
import type { TransferSummary } from "../../schema/gen/gci/v1/TransferSummary";
import type { TransmitImageRequest__Output } from "../../schema/gen/gci/v1/TransmitImageRequest";
import type {
  TransmitImageResponse,
  TransmitImageResponse__Output,
} from "../../schema/gen/gci/v1/TransmitImageResponse";
import type { Catalog, PlacementRecord } from "../catalog";
import { ClusterClient } from "../common/client";
import { dataLoss, exhausted, GciError, notFound, precondition, unavailable } from "../common/errors";
import { type ImageInfo, type ImageStore, checkChunkList, readImage } from "../image";
import { toStatus } from "../common/rpc/status";
import type { Logger } from "./log";

/** Progress of one transfer, reported at least once a second. */
export interface TransferProgress {
  readonly bytesDone: number;
  readonly bytesTotal: number;
  readonly chunksDone: number;
  readonly chunksTotal: number;
  /** Bytes per second received over the last second. */
  readonly rate: number;
}

/** How long an upload or a transfer may go without a byte before it is ended. */
export const STREAM_IDLE_MS = 10_000;
/** An upload's or a transfer's deadline: this much, plus the time its bytes take at STREAM_MIN_RATE. */
const STREAM_BASE_MS = 60_000;
/** Bytes per second below which an upload or a transfer is called stuck (well under any link in use). */
export const STREAM_MIN_RATE = 256 * 1024;

/** How long an upload or a transfer of `bytes` may take in all. */
export function streamDeadlineMs(bytes: number): number {
  return STREAM_BASE_MS + Math.ceil((bytes / STREAM_MIN_RATE) * 1000);
}
/** How long a connection to a data socket may take to present its token. */
const TOKEN_WAIT_MS = 3_000;

/** Calls `onIdle` once if `restart` is not called again within `ms`; `stop` pauses it. */
export class IdleTimer {
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly ms: number,
    private readonly onIdle: () => void,
  ) {}

  restart(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(this.onIdle, this.ms);
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
/** How long a transfer lease lasts unless renewed; renewed every third of it. */
export const LEASE_TTL_MS = 15_000;
/** How long a request waits for another transfer of the same image to finish. */
const WAIT_FOR_OTHER_MS = 30 * 60_000;
/** How long a pull keeps retrying (its sources may be restarting), with backoff up to 2 s. */
export const RETRY_FOR_MS = 60_000;
const WRITES_IN_FLIGHT = 4;
/** Received chunks the archive validator has not read yet, at most (4 MiB each). */
const WAITING_FOR_VALIDATION = 8;

/**
 * The sending side of the peer API: streams an image's layout, then every chunk the receiver
 * does not hold — over a data socket when the receiver asks for one (see peer.proto), else as
 * Chunk messages. `maxRate` (bytes/s, 0 = unlimited) throttles it, for tests and shared links.
 * `host` is where the data socket listens: the host of this cluster manager's endpoint.
 */
export async function transmit(
  store: ImageStore,
  log: Logger,
  call: grpc.ServerWritableStream<TransmitImageRequest__Output, TransmitImageResponse>,
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
    let bytes = 0;
    let chunks = 0;
    const started = Date.now();
    const sent = async (size: number) => {
      bytes += size;
      chunks++;
      if (maxRate > 0) await throttle(started, bytes, maxRate);
    };
    if (req.data_socket && wanted.length > 0) {
      const socket = await openDataSocket(call, host);
      try {
        // The next chunk is read from the store while this one goes out.
        let next: Promise<Buffer> | undefined = store.readChunk(wanted[0][1].sha256);
        for (let i = 0; i < wanted.length && !call.cancelled && !socket.destroyed; i++) {
          const data: Buffer = await next!;
          next = i + 1 < wanted.length ? store.readChunk(wanted[i + 1][1].sha256) : undefined;
          if (!socket.write(data)) await drained(socket);
          await sent(data.length);
        }
        next?.catch(() => undefined);
        // Flushed, or closed by the receiver (which ended or cancelled the transfer).
        await new Promise<void>((resolve) => {
          socket.once("close", resolve);
          socket.end(resolve);
        });
      } finally {
        socket.destroy();
      }
    } else {
      for (const [index, ref] of wanted) {
        if (call.cancelled) break;
        const data = await store.readChunk(ref.sha256);
        await write(call, { chunk: { index, sha256: ref.sha256, data } });
        await sent(data.length);
      }
    }
    log.info("transmit.sent", {
      requestId: req.request_id,
      digest: req.digest,
      to: req.receiver,
      bytes,
      chunks,
      skipped: entry.chunks.length - chunks,
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

/** How long a receiver has to connect to the data socket it was sent. */
const DATA_SOCKET_CONNECT_MS = 10_000;

/**
 * Listens on `host` for the one connection that presents a fresh token, tells the receiver
 * where (a DataSocket message), and resolves with that connection. The listener closes as soon
 * as it has it, or after DATA_SOCKET_CONNECT_MS.
 */
async function openDataSocket(
  call: grpc.ServerWritableStream<unknown, TransmitImageResponse>,
  host: string,
): Promise<net.Socket> {
  const token = randomBytes(16).toString("hex");
  const server = net.createServer();
  const pending = new Set<net.Socket>();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, resolve);
  });
  try {
    const accepted = new Promise<net.Socket>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            unavailable(
              `the receiver did not connect to the data socket within ${DATA_SOCKET_CONNECT_MS} ms`,
            ),
          ),
        DATA_SOCKET_CONNECT_MS,
      );
      call.once("cancelled", () => {
        clearTimeout(timer);
        reject(unavailable("the receiver cancelled the transfer"));
      });
      server.on("connection", (socket) => {
        pending.add(socket);
        socket.setNoDelay(true);
        // A connection that does not present the token soon is closed, so none can be held open.
        const tokenLate = (): void => {
          socket.destroy();
        };
        socket.setTimeout(TOKEN_WAIT_MS, tokenLate);
        let presented = Buffer.alloc(0);
        const onData = (piece: Buffer) => {
          presented = Buffer.concat([presented, piece]);
          if (presented.length < token.length) return;
          socket.off("data", onData);
          if (!timingSafeEqual(presented.subarray(0, token.length), Buffer.from(token))) {
            socket.destroy();
            return;
          }
          pending.delete(socket);
          socket.off("timeout", tokenLate);
          clearTimeout(timer);
          // From now on, a receiver that stops reading for the idle limit ends the transfer.
          socket.setTimeout(STREAM_IDLE_MS, () =>
            socket.destroy(
              unavailable(`the receiver read nothing from the data socket for ${STREAM_IDLE_MS / 1000} s`),
            ),
          );
          resolve(socket);
        };
        socket.on("data", onData);
        socket.on("close", () => pending.delete(socket));
        socket.on("error", () => socket.destroy());
      });
    });
    accepted.catch(() => undefined); // awaited below; a timeout must not go unhandled meanwhile
    const { port } = server.address() as net.AddressInfo;
    await write(call, { data_socket: { address: `${host}:${port}`, token } });
    return await accepted;
  } finally {
    server.close();
    // Connections that never presented the token go with the listener.
    for (const socket of pending) socket.destroy();
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

function write(
  call: grpc.ServerWritableStream<unknown, TransmitImageResponse>,
  msg: TransmitImageResponse,
): Promise<void> {
  return new Promise((resolve) => {
    if (call.write(msg)) resolve();
    else call.once("drain", resolve);
  });
}

async function throttle(started: number, bytes: number, maxRate: number): Promise<void> {
  const due = started + (bytes / maxRate) * 1000;
  const wait = due - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
}

/** Where a puller lives: its datacenter, store, catalog and log. */
export interface PullerArgs {
  readonly datacenter: string;
  readonly region: string;
  /** The largest image this datacenter accepts (its --max-upload-bytes). */
  readonly maxImageBytes: number;
  readonly store: ImageStore;
  readonly catalog: Catalog;
  readonly log: Logger;
  /** How long a pull keeps retrying before its placement is "failed" (--transfer-retry-ms). @default RETRY_FOR_MS */
  readonly retryForMs?: number;
}

/** One pull running in this process: how to cancel it, and the chunks it relies on. */
interface Pull {
  done: Promise<TransferSummary | undefined>;
  readonly cancel: AbortController;
  /** The chunks the collector must keep for it: those it said it held, then its image's layout. */
  chunks: ReadonlySet<string>;
}

/** The error a cancelled pull ends with, and every request waiting on it. */
export function removedWhileTransferring(digest: string, datacenter: string): GciError {
  return precondition(
    `image ${digest} was removed from ${datacenter} while it was being transferred: the transfer was ` +
      `cancelled; push or replicate the image again if ${datacenter} still needs it`,
  );
}

/**
 * The receiving side: brings an image into this datacenter from one that holds it. Within
 * this process, requests for the same image share one pull; across processes, a lease in the
 * catalog makes exactly one transfer run and the others wait for its placement.
 */
export class ImagePuller {
  private readonly inflight = new Map<string, Pull>();
  private readonly listeners = new Map<string, Set<(p: TransferProgress) => void>>();

  constructor(private readonly args: PullerArgs) {}

  /**
   * Makes the image present here. Returns the transfer that happened, or undefined when the
   * image was already here (or another request's transfer brought it).
   */
  ensure(
    digest: string,
    requestId: string,
    onProgress?: (p: TransferProgress) => void,
  ): Promise<TransferSummary | undefined> {
    if (onProgress) {
      const set = this.listeners.get(digest) ?? new Set();
      set.add(onProgress);
      this.listeners.set(digest, set);
    }
    let pull = this.inflight.get(digest);
    if (!pull) {
      const started: Pull = {
        done: Promise.resolve(undefined),
        cancel: new AbortController(),
        chunks: new Set(),
      };
      started.done = this.pull(digest, requestId, started).finally(() => {
        this.inflight.delete(digest);
        this.listeners.delete(digest);
      });
      this.inflight.set(digest, started);
      pull = started;
    }
    return pull.done;
  }

  /**
   * Cancels the pull of `digest` running here, if any (the image is being removed from this
   * datacenter): it stops, every request waiting on it fails with `reason`, and no placement is
   * left. Resolves once it has ended, with the chunks it had named (for the collector to drop).
   */
  async cancel(digest: string, reason: GciError): Promise<ReadonlySet<string>> {
    const pull = this.inflight.get(digest);
    if (!pull) return new Set();
    pull.cancel.abort(reason);
    await pull.done.catch(() => undefined);
    this.args.log.info("transfer.cancelled", { digest, error: reason.message });
    return pull.chunks;
  }

  /** Every chunk a pull running here relies on: the collector keeps them, whatever their age. */
  liveChunks(): Set<string> {
    const live = new Set<string>();
    for (const pull of this.inflight.values()) for (const sha of pull.chunks) live.add(sha);
    return live;
  }

  private emit(digest: string, p: TransferProgress): void {
    for (const fn of this.listeners.get(digest) ?? []) fn(p);
  }

  private async pull(digest: string, requestId: string, state: Pull): Promise<TransferSummary | undefined> {
    const { datacenter, store, catalog } = this.args;
    const { signal } = state.cancel;
    if (await store.has(digest)) {
      await this.markPresent(digest, requestId);
      return undefined;
    }
    const holder = `${datacenter}/${process.pid}/${randomUUID()}`;
    const waitUntil = Date.now() + WAIT_FOR_OTHER_MS;
    while (!(await catalog.acquireLease(digest, datacenter, holder, LEASE_TTL_MS))) {
      if (await store.has(digest)) return undefined;
      signal.throwIfAborted();
      if (Date.now() > waitUntil)
        throw unavailable(`gave up waiting for another transfer of ${digest} into ${datacenter}`);
      await sleep(250);
    }
    const renew = setInterval(() => {
      catalog.acquireLease(digest, datacenter, holder, LEASE_TTL_MS).catch(() => undefined);
    }, LEASE_TTL_MS / 3);
    try {
      // The lease holder checks again: a transfer that finished while we waited brought it.
      if (await store.has(digest)) {
        await this.markPresent(digest, requestId);
        return undefined;
      }
      return await this.pullWithRetries(digest, requestId, state);
    } catch (e) {
      // A cancelled pull leaves no placement: the removal that cancelled it deletes the image here.
      if (signal.aborted) await catalog.deletePlacement(digest, datacenter);
      throw e;
    } finally {
      clearInterval(renew);
      await catalog.releaseLease(digest, datacenter, holder).catch(() => undefined);
    }
  }

  private async pullWithRetries(digest: string, requestId: string, state: Pull): Promise<TransferSummary> {
    const { datacenter, catalog, log } = this.args;
    const { signal } = state.cancel;
    let lastError: unknown;
    const giveUpAt = Date.now() + (this.args.retryForMs ?? RETRY_FOR_MS);
    for (let attempt = 1; Date.now() < giveUpAt; attempt++) {
      signal.throwIfAborted();
      const sources = await this.sources(digest);
      log.info("image.lookup", {
        requestId,
        digest,
        here: false,
        presentIn: sources.map((s) => s.datacenter),
        attempt,
      });
      if (sources.length === 0) {
        lastError = notFound(
          `image ${digest} is not present in any datacenter the catalog knows: push it with \`gci image push\``,
        );
        break;
      }
      for (const source of sources) {
        try {
          return await this.pullFrom(digest, source.datacenter, requestId, state);
        } catch (e) {
          // A removal cancelled it: no retry, no "failed" placement.
          signal.throwIfAborted();
          lastError = e;
          log.warn("transfer.failed", {
            requestId,
            digest,
            source: source.datacenter,
            attempt,
            error: String(e),
          });
        }
      }
      await sleep(Math.min(2000, 250 * attempt));
    }
    const error = GciError.isInstance(lastError) ? lastError : unavailable(String(lastError));
    await catalog.putPlacement({
      digest,
      datacenter,
      state: "failed",
      bytesDone: 0,
      bytesTotal: 0,
      error: error.message,
      updatedAt: Date.now(),
    });
    throw error;
  }

  /** Datacenters holding the image, those of our own region first. */
  private async sources(digest: string): Promise<PlacementRecord[]> {
    const { datacenter, region, catalog } = this.args;
    const present = (await catalog.listPlacements(digest)).filter(
      (p) => p.state === "present" && p.datacenter !== datacenter,
    );
    const regionOf = new Map((await catalog.listDatacenters()).map((d) => [d.name, d.region]));
    return present
      .filter((p) => regionOf.has(p.datacenter))
      .sort(
        (a, b) =>
          Number(regionOf.get(b.datacenter) === region) - Number(regionOf.get(a.datacenter) === region),
      );
  }

  private async pullFrom(
    digest: string,
    source: string,
    requestId: string,
    state: Pull,
  ): Promise<TransferSummary> {
    const { datacenter, store, catalog, log } = this.args;
    const { signal } = state.cancel;
    const dc = await catalog.getDatacenter(source);
    if (!dc) throw notFound(`datacenter ${source} is not in the catalog any more`);
    const held = [...(await store.listChunks())];
    const heldSet = new Set(held);
    // What we tell the source we hold must still be here when its layout names it.
    state.chunks = heldSet;
    log.info("transfer.requested", {
      requestId,
      digest,
      source,
      endpoint: dc.endpoint,
      heldChunks: held.length,
    });
    const started = Date.now();
    const client = new ClusterClient(dc.endpoint);
    const watch = new TransferWatch(digest, source);
    const cancelled = (): void => watch.cancel(signal.reason as GciError);
    if (signal.aborted) cancelled();
    signal.addEventListener("abort", cancelled, { once: true });
    let layout: ChunkRef__Output[] | undefined;
    let name = "";
    let bytesTotal = 0;
    let bytesDone = 0;
    let wire = 0;
    let chunksDone = 0;
    let windowBytes = 0;
    let windowStart = Date.now();
    let rate = 0;
    let lastReport = 0;
    const writes = new Set<Promise<void>>();
    const report = async (force = false) => {
      const now = Date.now();
      if (now - windowStart >= 1000) {
        rate = (windowBytes * 1000) / (now - windowStart);
        windowBytes = 0;
        windowStart = now;
      }
      // A cancelled pull writes no placement: the removal deletes it.
      if (signal.aborted || (!force && now - lastReport < 500)) return;
      lastReport = now;
      this.emit(digest, { bytesDone, bytesTotal, chunksDone, chunksTotal: layout?.length ?? 0, rate });
      await catalog.putPlacement({
        digest,
        datacenter,
        state: "transferring",
        bytesDone,
        bytesTotal,
        error: "",
        updatedAt: now,
      });
    };
    let inOrder: InOrder | undefined;
    /** The index of the next chunk the source must send. */
    let due = 0;
    /** A chunk arrived (in the stream or on the data socket): verified, stored, validated in order. */
    const received = async (index: number, sha256: string, data: Buffer) => {
      const expected = layout?.[index];
      if (!expected || expected.sha256 !== sha256) {
        throw dataLoss(`chunk #${index} from ${source} is not in the image's layout: the source is corrupt`);
      }
      // Chunks come in layout order, skipping only held ones (the validator reads in order).
      while (due < layout!.length && heldSet.has(layout![due].sha256)) due++;
      if (index !== due) {
        throw dataLoss(`chunk #${index} from ${source} came where #${due} was due: the source is corrupt`);
      }
      due++;
      inOrder?.put(index, data);
      // Up to WRITES_IN_FLIGHT chunks are verified and fsynced while the next ones arrive.
      const write = store.putChunk(sha256, data).then(() => {
        bytesDone += data.length;
        wire += data.length;
        windowBytes += data.length;
        chunksDone++;
      });
      writes.add(write);
      write.then(
        () => writes.delete(write),
        () => undefined,
      );
      if (writes.size >= WRITES_IN_FLIGHT) await Promise.race(writes);
      await inOrder?.room(WAITING_FOR_VALIDATION);
      await report();
    };
    let validated: Promise<ImageInfo> | undefined;
    let overSocket: Promise<void> | undefined;
    try {
      const stream = client.transmitImage({
        digest,
        held_chunks: held,
        receiver: datacenter,
        request_id: requestId,
        data_socket: true,
      });
      watch.signal.addEventListener("abort", () => stream.cancel(), { once: true });
      watch.idle.restart();
      try {
        for await (const msg of stream as AsyncIterable<TransmitImageResponse__Output>) {
          watch.idle.stop();
          if (msg.layout) {
            // Sizes bound what the data socket makes us allocate: checked before anything arrives.
            layout = checkChunkList(digest, msg.layout.chunks);
            name = msg.layout.name;
            bytesTotal = checkImageSize(digest, source, layout, this.args);
            state.chunks = new Set(layout.map((c) => c.sha256));
            watch.startDeadline(bytesTotal);
            for (const c of layout) {
              if (heldSet.has(c.sha256)) {
                bytesDone += c.size;
                chunksDone++;
              }
            }
            // The archive is validated (format rules, whole digest) as its chunks arrive.
            const feed = new InOrder(layout, heldSet, store, source);
            inOrder = feed;
            validated = readImage(feed, { expectedDigest: digest });
            validated.catch((e) => {
              feed.fail(e);
              stream.cancel();
            });
            await report(true);
          } else if (msg.data_socket) {
            const owed = layout!.flatMap((c, index) =>
              heldSet.has(c.sha256) ? [] : [{ index, size: c.size }],
            );
            overSocket = receiveOverSocket(msg.data_socket, owed, source, watch, async (index, data) => {
              // Our own work on a chunk is not the source being idle.
              watch.idle.stop();
              await received(index, layout![index].sha256, data);
              watch.idle.restart();
            });
            overSocket.catch(() => stream.cancel());
          } else if (msg.chunk) {
            await received(msg.chunk.index, msg.chunk.sha256, msg.chunk.data);
          }
          watch.idle.restart();
        }
        await overSocket;
        watch.stop();
        await Promise.all(writes);
        if (!layout) throw dataLoss(`${source} sent no layout for ${digest}`);
        for (const c of layout) {
          if (!(await store.hasChunk(c.sha256)))
            throw dataLoss(`the stream from ${source} ended before chunk ${c.sha256} arrived`);
        }
      } catch (e) {
        inOrder?.fail(e);
        // A stream we cancelled (the data socket or the archive failed): that failure is the reason.
        const failure = async (p?: Promise<unknown>) =>
          p?.then(
            () => undefined,
            (v: unknown) => v,
          );
        const cause = (await failure(overSocket)) ?? (await failure(validated));
        // A source gone quiet or past its deadline: that is the reason, whatever it broke on the way.
        if (watch.reason !== undefined) throw watch.reason;
        throw (e as { code?: number }).code === grpc.status.CANCELLED && cause ? cause : e;
      }
      log.info("transfer.streamed", { requestId, digest, source, bytes: wire, chunks: layout.length });
      await report(true);
      const entry = await store.commitImage(digest, layout, { name, verified: await validated! });
      log.info("transfer.verified", {
        requestId,
        digest,
        source,
        chunks: entry.chunks.length,
        sizeBytes: entry.sizeBytes,
      });
      const seconds = (Date.now() - started) / 1000;
      // Cancelled after its bytes were stored: the removal deletes the copy; it must not be "present".
      signal.throwIfAborted();
      await this.markPresent(digest, requestId);
      return { digest, source, destination: datacenter, bytes: wire, seconds };
    } finally {
      signal.removeEventListener("abort", cancelled);
      watch.stop();
      client.close();
    }
  }

  private async markPresent(digest: string, requestId: string): Promise<void> {
    const { datacenter, store, catalog, log } = this.args;
    const entry = await store.get(digest);
    if (!entry) throw notFound(`image ${digest} vanished from the store of ${datacenter}`);
    const existing = await catalog.getPlacement(digest, datacenter);
    if (existing?.state === "present") return;
    await catalog.putPlacement({
      digest,
      datacenter,
      state: "present",
      bytesDone: entry.sizeBytes,
      bytesTotal: entry.sizeBytes,
      error: "",
      updatedAt: Date.now(),
    });
    log.info("placement.recorded", { requestId, digest, state: "present" });
  }

  /**
   * On start-up: resume the transfers this datacenter had running when it stopped, unless the
   * image was removed meanwhile (its placement here, or its catalog record, is gone). The chunks
   * of one not resumed are unreferenced: the collector frees them after its grace.
   */
  async resumeInterrupted(): Promise<void> {
    const { datacenter, catalog, log } = this.args;
    for (const p of await catalog.listPlacements()) {
      if (p.datacenter !== datacenter || p.state !== "transferring") continue;
      const lease = await catalog.getLease(p.digest, datacenter);
      // Only one cluster manager runs per datacenter, so a lease of ours is a dead process's.
      if (lease?.holder.startsWith(`${datacenter}/`))
        await catalog.releaseLease(p.digest, datacenter, lease.holder);
      if (!(await catalog.getImage(p.digest))) {
        await catalog.deletePlacement(p.digest, datacenter);
        log.info("transfer.not_resumed", { digest: p.digest, reason: "the image is not in the catalog" });
        continue;
      }
      log.info("transfer.resuming", { digest: p.digest, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal });
      this.ensure(p.digest, `resume-${p.digest.slice(7, 19)}`).catch((e) =>
        log.warn("transfer.resume_failed", { digest: p.digest, error: String(e) }),
      );
    }
  }
}

/**
 * Reads the chunks `owed` (layout order) from a sender's data socket, back to back, handing
 * each whole chunk to `onChunk`; awaiting it holds the socket back, so the sender never runs
 * more than a socket buffer ahead of the receiver.
 */
async function receiveOverSocket(
  socket: { address: string; token: string },
  owed: readonly { index: number; size: number }[],
  source: string,
  watch: TransferWatch,
  onChunk: (index: number, data: Buffer) => Promise<void>,
): Promise<void> {
  const colon = socket.address.lastIndexOf(":");
  const conn = net.connect({
    host: socket.address.slice(0, colon),
    port: Number(socket.address.slice(colon + 1)),
  });
  const cut = (): void => {
    conn.destroy(watch.reason);
  };
  if (watch.signal.aborted) cut();
  watch.signal.addEventListener("abort", cut, { once: true });
  try {
    await once(conn, "connect");
    conn.write(socket.token);
    let k = 0;
    let chunk = owed.length > 0 ? Buffer.allocUnsafe(owed[0].size) : undefined;
    let filled = 0;
    for await (const piece of conn as AsyncIterable<Buffer>) {
      watch.idle.restart();
      for (let at = 0; at < piece.length;) {
        if (!chunk) throw dataLoss(`${source} sent more bytes on the data socket than the chunks it owed`);
        const n = piece.copy(chunk, filled, at, Math.min(piece.length, at + chunk.length - filled));
        filled += n;
        at += n;
        if (filled === chunk.length) {
          await onChunk(owed[k].index, chunk);
          k++;
          filled = 0;
          chunk = k < owed.length ? Buffer.allocUnsafe(owed[k].size) : undefined;
        }
      }
    }
    if (k < owed.length) {
      throw dataLoss(`the data socket from ${source} closed after ${k} of the ${owed.length} chunks it owed`);
    }
  } finally {
    watch.signal.removeEventListener("abort", cut);
    conn.destroy();
  }
}

/**
 * The two clocks of one pull: the idle limit (nothing from the source for STREAM_IDLE_MS) and
 * the deadline (streamDeadlineMs of the image's bytes). Either one aborts
 * `signal`, which cancels the stream and closes the data socket; `reason` says which.
 */
class TransferWatch {
  readonly idle: IdleTimer;
  reason?: GciError;
  private readonly abort = new AbortController();
  private deadline?: NodeJS.Timeout;

  constructor(
    private readonly digest: string,
    private readonly source: string,
  ) {
    this.idle = new IdleTimer(STREAM_IDLE_MS, () =>
      this.fail(
        `the transfer of ${digest} from ${source} sent nothing for ${STREAM_IDLE_MS / 1000} s (the idle ` +
          `limit of uploads and transfers): the source is stopped or unreachable; the pull tries again, ` +
          `from another datacenter if one holds the image`,
      ),
    );
  }

  get signal(): AbortSignal {
    return this.abort.signal;
  }

  /** Ends the pull now with `reason` (the image is being removed here). */
  cancel(reason: GciError): void {
    this.stop();
    this.reason ??= reason;
    this.abort.abort(this.reason);
  }

  /** Starts the deadline once the image's size is known. */
  startDeadline(bytes: number): void {
    const ms = streamDeadlineMs(bytes);
    this.deadline = setTimeout(
      () =>
        this.fail(
          `the transfer of ${this.digest} (${bytes} bytes) from ${this.source} did not finish within ` +
            `${Math.round(ms / 1000)} s, its deadline (${STREAM_BASE_MS / 1000} s plus the time its bytes ` +
            `take at ${STREAM_MIN_RATE / 1024} KiB/s): the source or the network is too slow; the pull tries again`,
        ),
      ms,
    );
  }

  stop(): void {
    this.idle.stop();
    clearTimeout(this.deadline);
  }

  private fail(message: string): void {
    this.cancel(new GciError("DEADLINE_EXCEEDED", message));
  }
}

/** The image's size from its checked layout, within the receiving datacenter's maximum. */
function checkImageSize(
  digest: string,
  source: string,
  layout: readonly ChunkRef__Output[],
  args: Pick<PullerArgs, "datacenter" | "maxImageBytes">,
): number {
  const bytes = layout.reduce((sum, c) => sum + c.size, 0);
  if (bytes > args.maxImageBytes) {
    throw exhausted(
      `image ${digest} from ${source} is ${bytes} bytes, larger than the maximum of ${args.datacenter}, ` +
        `${args.maxImageBytes} bytes (--max-upload-bytes, ClusterManagerArgs.maxUploadBytes): start its ` +
        `cluster manager with a larger --max-upload-bytes, or run the image where it is`,
    );
  }
  return bytes;
}

/**
 * The image's bytes in order, for the archive validator to read while the transfer runs: a
 * chunk the receiver already held is read from the store (verified again on the way), a
 * streamed one is handed over as it arrives. The validator computes the whole digest and
 * checks the archive's rules in the same pass, so nothing is read twice.
 */
class InOrder implements AsyncIterable<Buffer> {
  private readonly arrived = new Map<number, Buffer>();
  private wake?: () => void;
  private consumedWake?: () => void;
  private failure?: unknown;

  constructor(
    private readonly layout: readonly ChunkRef__Output[],
    private readonly held: ReadonlySet<string>,
    private readonly store: ImageStore,
    private readonly source: string,
  ) {}

  /** A streamed chunk, verified or about to be (putChunk rejects a damaged one). */
  put(index: number, data: Buffer): void {
    this.arrived.set(index, data);
    this.wake?.();
  }

  /** Ends the iteration with `e` (the stream failed), and any wait for room. */
  fail(e: unknown): void {
    this.failure ??= e;
    this.wake?.();
    this.consumedWake?.();
  }

  /** Resolves once fewer than `max` chunks wait for the validator. */
  async room(max: number): Promise<void> {
    while (this.arrived.size >= max && this.failure === undefined) {
      await new Promise<void>((resolve) => (this.consumedWake = resolve));
    }
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Buffer> {
    for (const [index, ref] of this.layout.entries()) {
      let data: Buffer;
      if (this.held.has(ref.sha256)) {
        data = await this.store.readChunk(ref.sha256);
      } else {
        while (!this.arrived.has(index)) {
          if (this.failure !== undefined) throw this.failure;
          await new Promise<void>((resolve) => (this.wake = resolve));
        }
        data = this.arrived.get(index)!;
        this.arrived.delete(index);
        this.consumedWake?.();
      }
      if (data.length !== ref.size) {
        throw dataLoss(
          `chunk #${index} from ${this.source} is ${data.length} bytes, its layout says ${ref.size}: the source is corrupt`,
        );
      }
      yield data;
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
