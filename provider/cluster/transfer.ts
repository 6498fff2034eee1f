/**
 * Peer image transfer: the index of provider/cluster/transfer/ — the sender (transmit), the
 * receiver (ImagePuller, with its lease and its invariants), and the stream limits uploads share.
 */
export { type PullerArgs } from "./transfer/args";
export {
  type TransferProgress,
  LEASE_TTL_MS,
  RETRY_FOR_MS,
  STREAM_IDLE_MS,
  STREAM_MIN_RATE,
  streamDeadlineMs,
} from "./transfer/limits";
export { ImagePuller, removedWhileTransferring } from "./transfer/receiver";
export { transmit } from "./transfer/sender";
export { IdleTimer } from "./transfer/watch";
