/**
 * The receiving end of UploadImage, bounded: what one upload makes the cluster manager hold
 * (UPLOAD_BUFFER_BYTES), how large it may be (the datacenter's maximum), how long its sender may
 * pause (STREAM_IDLE_MS) and how long it may take in all (streamDeadlineMs of its bytes). Each
 * limit ends the upload with an error naming the limit, the value and the fix.
 */

import { PassThrough, type Readable } from "stream";
import type * as grpc from "@grpc/grpc-js";
import type { Image } from "../../schema/gen/gci/v1/Image";
import type { UploadHeader__Output } from "../../schema/gen/gci/v1/UploadHeader";
import { GciError, exhausted, invalid } from "../common/errors";
import { IdleTimer, STREAM_IDLE_MS, STREAM_MIN_RATE, streamDeadlineMs } from "./transfer";

/** What one upload buffers between the network and the image store. */
export const UPLOAD_BUFFER_BYTES = 8 * 1024 * 1024;

/** One message of an upload: the header first, then the archive's bytes. */
export interface UploadMessage {
  readonly header?: UploadHeader__Output | null;
  readonly data?: Buffer;
}

export type UploadCall = grpc.ServerReadableStream<UploadMessage, Image>;

/** An upload being received: its header, and its archive's bytes for the image store. */
export interface Upload {
  readonly header: Promise<UploadHeader__Output>;
  readonly body: Readable;
  /** Stops the clocks once the store has what it needs (or failed). */
  done(): void;
}

/** Starts reading an upload into `body`, ending it with a named error when it passes a limit. */
export function receiveUpload(call: UploadCall, datacenter: string, maxBytes: number): Upload {
  const body = new PassThrough({ highWaterMark: UPLOAD_BUFFER_BYTES });
  const started = Date.now();
  let received = 0;
  let headerSeen = false;
  let rejectHeader: (e: Error) => void = () => undefined;
  const fail = (e: Error): void => {
    idle.stop();
    rejectHeader(e);
    body.destroy(e);
    call.destroy();
  };
  const idle = new IdleTimer(STREAM_IDLE_MS, () => fail(idleError(datacenter, received)));
  const header = new Promise<UploadHeader__Output>((resolve, reject) => {
    rejectHeader = reject;
    call.on("data", (msg: UploadMessage) => {
      idle.restart();
      if (!headerSeen) {
        if (!msg.header)
          return fail(
            invalid(
              "UploadImage: the first message must be the header (request_id, name): send it before any data",
            ),
          );
        headerSeen = true;
        return resolve(msg.header);
      }
      if (!msg.data) return;
      received += msg.data.length;
      const over = limitPassed(datacenter, received, maxBytes, Date.now() - started);
      if (over !== undefined) return fail(over);
      if (!body.write(msg.data)) {
        // The store is the slow side: the sender is not idle while it is held back.
        idle.stop();
        call.pause();
        body.once("drain", () => {
          idle.restart();
          call.resume();
        });
      }
    });
    call.on("end", () => {
      idle.stop();
      if (!headerSeen) reject(invalid("UploadImage: the stream ended without a header"));
      body.end();
    });
    call.on("error", (e) => {
      idle.stop();
      reject(e);
      body.destroy(e);
    });
  });
  header.catch(() => undefined); // the caller awaits it; a failure before that must not go unhandled
  idle.restart();
  return { header, body, done: () => idle.stop() };
}

/** The size or pace limit an upload of `received` bytes after `elapsedMs` passes, if any. */
function limitPassed(
  datacenter: string,
  received: number,
  maxBytes: number,
  elapsedMs: number,
): GciError | undefined {
  if (received > maxBytes) {
    return exhausted(
      `the upload to datacenter ${datacenter} is larger than its maximum of ${maxBytes} bytes ` +
        `(--max-upload-bytes, ClusterManagerArgs.maxUploadBytes): push a smaller image, or start the ` +
        `cluster manager with a larger --max-upload-bytes`,
    );
  }
  if (elapsedMs > streamDeadlineMs(received)) {
    return new GciError(
      "DEADLINE_EXCEEDED",
      `the upload to ${datacenter} sent ${received} bytes in ${Math.round(elapsedMs / 1000)} s, slower than ` +
        `the minimum of ${STREAM_MIN_RATE / 1024} KiB/s (after the first minute) that bounds how long an ` +
        `upload may hold the cluster manager: push over a faster link, or closer to the datacenter`,
    );
  }
  return undefined;
}

function idleError(datacenter: string, received: number): GciError {
  return new GciError(
    "DEADLINE_EXCEEDED",
    `the upload to ${datacenter} sent nothing for ${STREAM_IDLE_MS / 1000} s (the idle limit of uploads ` +
      `and transfers), after ${received} bytes: send the archive without pauses, and check the network ` +
      `between the client and the cluster manager`,
  );
}
