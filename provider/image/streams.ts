/**
 * Stream plumbing between the image format and tar-stream: backpressure on tar-stream's (streamx)
 * writables, the Feeder that copies an archive's bytes into the extractor, and tearing it down.
 */

import type * as tar from "tar-stream";
import type { Meter } from "../common/digest";
import type { ReadImageOptions } from "./types";

/**
 * The part of a writable that backpressure needs. tar-stream's streams are streamx streams,
 * whose typings differ from Node's; both have these members.
 */
export interface Sink {
  readonly destroyed: boolean;
  readonly destroying?: boolean;
  write(data: Buffer): boolean;
  end(): unknown;
  destroy(err?: Error): void;
  on(event: "drain" | "close", listener: () => void): unknown;
  off(event: "drain" | "close", listener: () => void): unknown;
}

/** Views a streamx writable through the Sink interface (a cast, confined here). */
export function flowing(stream: unknown): Sink {
  return stream as Sink;
}

/**
 * Copies the source into tar-stream, hashing on the way. Remembers the source's own error (set
 * before tar-stream is torn down, so the reader can tell it from a parse error) and the onBytes
 * call in flight (so a failed read can wait for it without waiting for a stalled source).
 */
export class Feeder {
  error: unknown = undefined;
  inFlight: Promise<void> | void = undefined;
  readonly done: Promise<void>;

  constructor(
    private readonly input: AsyncIterable<Uint8Array>,
    private readonly extract: Sink,
    private readonly meter: Meter,
    private readonly onBytes: ReadImageOptions["onBytes"],
  ) {
    this.done = this.run();
  }

  private async run(): Promise<void> {
    try {
      for await (const piece of this.input) {
        if (isStopped(this.extract)) break;
        const bytes = Buffer.isBuffer(piece)
          ? piece
          : Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
        this.meter.update(bytes);
        this.inFlight = this.onBytes?.(bytes);
        await this.inFlight;
        this.inFlight = undefined;
        if (!this.extract.write(bytes)) await drained(this.extract);
      }
      if (!isStopped(this.extract)) this.extract.end();
    } catch (e) {
      this.error = e ?? new Error("archive source failed");
      this.extract.destroy(this.error as Error);
    }
  }

  /** After a failed read: lets the onBytes call in flight finish, and stops a source that can be stopped. */
  async stop(): Promise<void> {
    // Only waits for the call to end: a rejection is not lost, since run() awaits the same call
    // and records it as `error`, which readImage reports unless it refused the archive first.
    await Promise.resolve(this.inFlight).catch(() => undefined);
    const source = this.input as { destroy?: () => void };
    if (typeof source.destroy === "function") source.destroy();
  }
}

export function isStopped(stream: Sink): boolean {
  return stream.destroyed || stream.destroying === true;
}

/** Resolves when a writable wants more data, or can never take any again. */
export function drained(stream: Sink): Promise<void> {
  return new Promise((resolve) => {
    if (isStopped(stream)) return resolve();
    const done = (): void => {
      stream.off("drain", done);
      stream.off("close", done);
      resolve();
    };
    stream.on("drain", done);
    stream.on("close", done);
  });
}

/** Destroys the extractor (if the iterator has not) and waits until it has reported its error. */
export async function settle(extract: tar.Extract): Promise<void> {
  if (extract.destroyed) return;
  const closed = new Promise<void>((resolve) => extract.once("close", () => resolve()));
  extract.destroy();
  await closed;
}

/** A single buffer as the async iterable onEntry expects. */
export async function* oneBuffer(bytes: Buffer): AsyncIterable<Buffer> {
  yield bytes;
}
