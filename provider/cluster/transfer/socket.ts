/** The receiver's data-socket reader: the sender's byte stream cut back into the chunks it owed. */
import { once } from "events";
import * as net from "net";
import { dataLoss } from "../../common/errors";
import type { TransferWatch } from "./watch";

/** A chunk the source owes: its index in the layout and its size. */
export interface Owed {
  readonly index: number;
  readonly size: number;
}

/**
 * Reads the chunks `owed` (layout order) from a sender's data socket, back to back, handing
 * each whole chunk to `onChunk`; awaiting it holds the socket back, so the sender never runs
 * more than a socket buffer ahead of the receiver.
 */
export async function receiveOverSocket(
  socket: { address: string; token: string },
  owed: readonly Owed[],
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
    const chunks = new ChunkCutter(owed, source);
    for await (const piece of conn as AsyncIterable<Buffer>) {
      watch.idle.restart();
      await chunks.take(piece, onChunk);
    }
    chunks.checkComplete();
  } finally {
    watch.signal.removeEventListener("abort", cut);
    conn.destroy();
  }
}

/** Cuts a byte stream into the owed chunks, in order; each chunk gets a buffer of its own size. */
class ChunkCutter {
  private k = 0;
  private chunk: Buffer | undefined;
  private filled = 0;

  constructor(
    private readonly owed: readonly Owed[],
    private readonly source: string,
  ) {
    this.chunk = owed.length > 0 ? Buffer.allocUnsafe(owed[0].size) : undefined;
  }

  /** Copies `piece` in, handing each chunk it completes to `onChunk` before going on. */
  async take(piece: Buffer, onChunk: (index: number, data: Buffer) => Promise<void>): Promise<void> {
    for (let at = 0; at < piece.length;) {
      const chunk = this.chunk;
      if (!chunk) throw dataLoss(`${this.source} sent more bytes on the data socket than the chunks it owed`);
      const n = piece.copy(chunk, this.filled, at, Math.min(piece.length, at + chunk.length - this.filled));
      this.filled += n;
      at += n;
      if (this.filled === chunk.length) {
        await onChunk(this.owed[this.k].index, chunk);
        this.k++;
        this.filled = 0;
        this.chunk = this.k < this.owed.length ? Buffer.allocUnsafe(this.owed[this.k].size) : undefined;
      }
    }
  }

  /** Throws when the socket closed before every owed chunk came. */
  checkComplete(): void {
    if (this.k < this.owed.length) {
      throw dataLoss(
        `the data socket from ${this.source} closed after ${this.k} of the ${this.owed.length} chunks it owed`,
      );
    }
  }
}
