/**
 * The numbers every transfer and upload lives by: idle limit, deadline, lease, retry window and
 * the bounds on what a pull keeps in memory; and the progress a pull reports.
 */

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
export const STREAM_BASE_MS = 60_000;
/** Bytes per second below which an upload or a transfer is called stuck (well under any link in use). */
export const STREAM_MIN_RATE = 256 * 1024;

/** How long an upload or a transfer of `bytes` may take in all. */
export function streamDeadlineMs(bytes: number): number {
  return STREAM_BASE_MS + Math.ceil((bytes / STREAM_MIN_RATE) * 1000);
}

/** How long a connection to a data socket may take to present its token. */
export const TOKEN_WAIT_MS = 3_000;
/** How long a receiver has to connect to the data socket it was sent. */
export const DATA_SOCKET_CONNECT_MS = 10_000;

/** How long a transfer lease lasts unless renewed; renewed every third of it. */
export const LEASE_TTL_MS = 15_000;
/** How long a request waits for another transfer of the same image to finish. */
export const WAIT_FOR_OTHER_MS = 30 * 60_000;
/** How long a pull keeps retrying (its sources may be restarting), with backoff up to 2 s. */
export const RETRY_FOR_MS = 60_000;
/** Chunks being verified and fsynced at once while the next ones arrive. */
export const WRITES_IN_FLIGHT = 4;
/** Received chunks the archive validator has not read yet, at most (4 MiB each). */
export const WAITING_FOR_VALIDATION = 8;

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
