/**
 * One attempt at a pull: the image streamed from one source, each chunk verified and stored as
 * it arrives, the archive validated alongside, then committed. The invariants it keeps are
 * stated once, in receiver.ts.
 */
import * as grpc from "@grpc/grpc-js";
import type { ChunkRef__Output } from "../../../schema/gen/gci/v1/ChunkRef";
import type { ImageLayout__Output } from "../../../schema/gen/gci/v1/ImageLayout";
import type { DataSocket__Output } from "../../../schema/gen/gci/v1/DataSocket";
import type { TransferSummary } from "../../../schema/gen/gci/v1/TransferSummary";
import type { TransmitImageResponse__Output } from "../../../schema/gen/gci/v1/TransmitImageResponse";
import { ClusterClient } from "../../common/client";
import { dataLoss, exhausted, type GciError, notFound } from "../../common/errors";
import { type ImageInfo, checkChunkList, readImage } from "../../image";
import type { Pull, PullerArgs } from "./args";
import { InOrder } from "./in-order";
import { type TransferProgress, WAITING_FOR_VALIDATION, WRITES_IN_FLIGHT } from "./limits";
import { PullProgress } from "./progress";
import { receiveOverSocket } from "./socket";
import { TransferWatch } from "./watch";

/** The stream from the source, as far as the attempt needs it: it can be cancelled. */
interface Cancellable {
  cancel(): void;
}

/** The pull of `digest` from `source`, once. `run` resolves when the image is committed to the store. */
export class PullAttempt {
  private readonly watch: TransferWatch;
  private readonly progress: PullProgress;
  private held: ReadonlySet<string> = new Set();
  private layout?: ChunkRef__Output[];
  private name = "";
  private inOrder?: InOrder;
  /** The archive validator's verdict (format rules, whole digest): settles once it read every chunk. */
  private validated?: Promise<ImageInfo>;
  private overSocket?: Promise<void>;
  /** The index of the next chunk the source must send. */
  private due = 0;
  /** Chunk writes (verify, fsync) in flight; a failed one stays here, so awaiting them all rejects. */
  private readonly writes = new Set<Promise<void>>();

  constructor(
    private readonly args: PullerArgs,
    private readonly digest: string,
    private readonly source: string,
    private readonly requestId: string,
    private readonly state: Pull,
    emit: (p: TransferProgress) => void,
  ) {
    this.watch = new TransferWatch(digest, source);
    const { datacenter, catalog } = args;
    this.progress = new PullProgress({ digest, datacenter, catalog, signal: state.cancel.signal, emit });
  }

  /** Streams, verifies and commits the image; the summary of what came over the wire. */
  async run(): Promise<TransferSummary> {
    const { digest, source, requestId, watch } = this;
    const { datacenter, store, catalog, log } = this.args;
    const { signal } = this.state.cancel;
    const dc = await catalog.getDatacenter(source);
    if (!dc) throw notFound(`datacenter ${source} is not in the catalog any more`);
    const held = [...(await store.listChunks())];
    // What we tell the source we hold must still be here when its layout names it.
    this.held = this.state.chunks = new Set(held);
    log.info("transfer.requested", {
      requestId,
      digest,
      source,
      endpoint: dc.endpoint,
      heldChunks: held.length,
    });
    const started = Date.now();
    const client = new ClusterClient(dc.endpoint);
    const cancelled = (): void => watch.cancel(signal.reason as GciError);
    if (signal.aborted) cancelled();
    signal.addEventListener("abort", cancelled, { once: true });
    try {
      const layout = await this.stream(client, held);
      log.info("transfer.streamed", {
        requestId,
        digest,
        source,
        bytes: this.progress.wire,
        chunks: layout.length,
      });
      await this.progress.report(true);
      const entry = await store.commitImage(digest, layout, {
        name: this.name,
        verified: await this.validated!,
      });
      log.info("transfer.verified", {
        requestId,
        digest,
        source,
        chunks: entry.chunks.length,
        sizeBytes: entry.sizeBytes,
      });
      const seconds = (Date.now() - started) / 1000;
      return { digest, source, destination: datacenter, bytes: this.progress.wire, seconds };
    } finally {
      signal.removeEventListener("abort", cancelled);
      watch.stop();
      client.close();
    }
  }

  /** Runs the stream to its end; resolves with the layout once every chunk of it is stored. */
  private async stream(client: ClusterClient, held: string[]): Promise<ChunkRef__Output[]> {
    const { digest, watch } = this;
    try {
      const stream = client.transmitImage({
        digest,
        held_chunks: held,
        receiver: this.args.datacenter,
        request_id: this.requestId,
        data_socket: true,
      });
      watch.signal.addEventListener("abort", () => stream.cancel(), { once: true });
      watch.idle.restart();
      for await (const msg of stream as AsyncIterable<TransmitImageResponse__Output>) {
        watch.idle.stop();
        await this.onMessage(msg, stream);
        watch.idle.restart();
      }
      await this.overSocket;
      watch.stop();
      await Promise.all(this.writes);
      return await this.allStored();
    } catch (e) {
      // Nothing of a failed attempt lands after it ends: the collector drops a cancelled pull's
      // chunks as soon as the pull has ended, so a write still in flight would outlive it.
      await Promise.allSettled([this.overSocket]);
      await Promise.allSettled([...this.writes]);
      throw await this.whyItFailed(e);
    }
  }

  private async onMessage(msg: TransmitImageResponse__Output, stream: Cancellable): Promise<void> {
    if (msg.layout) await this.onLayout(msg.layout, stream);
    else if (msg.data_socket) this.onDataSocket(msg.data_socket, stream);
    else if (msg.chunk) await this.received(msg.chunk.index, msg.chunk.sha256, msg.chunk.data);
  }

  /** The layout: checked (chunk list, size) before anything arrives, then the validator started. */
  private async onLayout(msg: ImageLayout__Output, stream: Cancellable): Promise<void> {
    const { digest, source } = this;
    // Sizes bound what the data socket makes us allocate: checked before anything arrives.
    const layout = checkChunkList(digest, msg.chunks);
    this.layout = layout;
    this.name = msg.name;
    this.progress.bytesTotal = checkImageSize(digest, source, layout, this.args);
    this.progress.chunksTotal = layout.length;
    this.state.chunks = new Set(layout.map((c) => c.sha256));
    this.watch.startDeadline(this.progress.bytesTotal);
    for (const c of layout) if (this.held.has(c.sha256)) this.progress.held(c.size);
    // The archive is validated (format rules, whole digest) as its chunks arrive.
    const feed = new InOrder(layout, this.held, this.args.store, source);
    this.inOrder = feed;
    this.validated = readImage(feed, { expectedDigest: digest });
    this.validated.catch((e) => {
      feed.fail(e);
      stream.cancel();
    });
    await this.progress.report(true);
  }

  /** The source opened a data socket: the chunks we lack come over it, in layout order. */
  private onDataSocket(socket: DataSocket__Output, stream: Cancellable): void {
    const layout = this.layout!;
    const owed = layout.flatMap((c, index) => (this.held.has(c.sha256) ? [] : [{ index, size: c.size }]));
    this.overSocket = receiveOverSocket(socket, owed, this.source, this.watch, async (index, data) => {
      // Our own work on a chunk is not the source being idle.
      this.watch.idle.stop();
      await this.received(index, layout[index].sha256, data);
      this.watch.idle.restart();
    });
    // The socket's failure is not lost: whyItFailed reads it from overSocket as the stream's cause.
    this.overSocket.catch(() => stream.cancel());
  }

  /** A chunk arrived (in the stream or on the data socket): verified, stored, validated in order. */
  private async received(index: number, sha256: string, data: Buffer): Promise<void> {
    const { layout, source } = this;
    const expected = layout?.[index];
    if (!expected || expected.sha256 !== sha256) {
      throw dataLoss(`chunk #${index} from ${source} is not in the image's layout: the source is corrupt`);
    }
    // Chunks come in layout order, skipping only held ones (the validator reads in order).
    while (this.due < layout!.length && this.held.has(layout![this.due].sha256)) this.due++;
    if (index !== this.due) {
      throw dataLoss(`chunk #${index} from ${source} came where #${this.due} was due: the source is corrupt`);
    }
    this.due++;
    this.inOrder?.put(index, data);
    // Up to WRITES_IN_FLIGHT chunks are verified and fsynced while the next ones arrive.
    const write = this.args.store.putChunk(sha256, data).then(() => this.progress.stored(data.length));
    this.writes.add(write);
    write.then(
      () => this.writes.delete(write),
      // A failed write stays in `writes`: the race below and Promise.all in stream() reject with it.
      () => undefined,
    );
    if (this.writes.size >= WRITES_IN_FLIGHT) await Promise.race(this.writes);
    await this.inOrder?.room(WAITING_FOR_VALIDATION);
    await this.progress.report();
  }

  /** The layout, once every chunk it names is in the store. */
  private async allStored(): Promise<ChunkRef__Output[]> {
    const { layout, source, digest } = this;
    if (!layout) throw dataLoss(`${source} sent no layout for ${digest}`);
    for (const c of layout) {
      if (!(await this.args.store.hasChunk(c.sha256)))
        throw dataLoss(`the stream from ${source} ended before chunk ${c.sha256} arrived`);
    }
    return layout;
  }

  /** The reason a stream failed with `e`: the clock that ran out, else what made us cancel it, else `e`. */
  private async whyItFailed(e: unknown): Promise<unknown> {
    this.inOrder?.fail(e);
    // A stream we cancelled (the data socket or the archive failed): that failure is the reason.
    const cause = (await failureOf(this.overSocket)) ?? (await failureOf(this.validated));
    // A source gone quiet or past its deadline: that is the reason, whatever it broke on the way.
    if (this.watch.reason !== undefined) return this.watch.reason;
    return (e as { code?: number }).code === grpc.status.CANCELLED && cause ? cause : e;
  }
}

/** What `p` rejected with, once settled; undefined when it resolved or is absent. */
async function failureOf(p?: Promise<unknown>): Promise<unknown> {
  return p?.then(
    () => undefined,
    (v: unknown) => v,
  );
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
