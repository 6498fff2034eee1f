import { GciError, unavailable } from "../errors";

/**
 * Which calls a client may send again after UNAVAILABLE, and why. A call is repeated only
 * when a second copy cannot do more than the first: reads, and mutations the server keys by
 * request id and converges (provider/cluster/server.ts).
 *
 * - StartVms: the group record and instance ids derive from the request id; a repeat, also
 *   after the cluster manager restarted, converges to the same VMs.
 * - ScaleVms: sets an absolute count; a repeat sets the same count.
 * - StopVms: stops what is left of the group; a repeat after it finished answers NOT_FOUND
 *   (the group is gone), which is not retried.
 * - DeleteImage: a repeat after the copy went answers NOT_FOUND, the same end state.
 * - ReplicateImage: the puller finds the copy present and transfers nothing.
 *
 * Not repeated: RestartVm (after a restart of the cluster manager the operation is forgotten
 * and a repeat restarts the VM again) and UploadImage (a stream: the bytes sent are gone;
 * the endpoint is re-resolved for the next call, the upload itself is never retried).
 */
export const IDEMPOTENT: ReadonlySet<string> = new Set([
  "getImage",
  "listImages",
  "listVms",
  "getVm",
  "getVmLogs",
  "getOperation",
  "waitOperation",
  "listOperations",
  "planStartVms",
  "startVms",
  "scaleVms",
  "stopVms",
  "deleteImage",
  "replicateImage",
]);

/** How long a datacenter client keeps retrying, and whom it tells. */
export interface RetryOptions {
  /**
   * Total time spent retrying one call, in milliseconds (the call's own deadline apart).
   * @default 30000, or $GCI_RETRY_SECONDS
   */
  readonly totalMs?: number;
  /** Called before each wait, e.g. to print "us-1 unavailable, retrying (3 s)...". */
  readonly onRetry?: (event: RetryEvent) => void;
}

export interface RetryEvent {
  readonly datacenter: string;
  readonly method: string;
  readonly attempt: number;
  /** Time spent retrying so far. */
  readonly elapsedMs: number;
  readonly error: GciError;
}

const FIRST_DELAY_MS = 200;
const MAX_DELAY_MS = 3000;

/** The retry bound: the option, else $GCI_RETRY_SECONDS, else 30 s. */
export function retryBoundMs(opts: RetryOptions = {}): number {
  if (opts.totalMs !== undefined) return opts.totalMs;
  const env = process.env.GCI_RETRY_SECONDS;
  if (env === undefined || env === "") return 30_000;
  const seconds = Number(env);
  if (!Number.isFinite(seconds) || seconds < 0) {
    throw new GciError(
      "INVALID_ARGUMENT",
      `GCI_RETRY_SECONDS="${env}" is not a number of seconds: set it to e.g. 30, or unset it`,
    );
  }
  return seconds * 1000;
}

/** True for errors that mean "the cluster manager is not there (now)": worth another try. */
export function isUnavailable(e: unknown): e is GciError {
  return GciError.isInstance(e) && e.code === "UNAVAILABLE";
}

export function isNotFound(e: unknown): e is GciError {
  return GciError.isInstance(e) && e.code === "NOT_FOUND";
}

/** Something that can send one attempt, and find the datacenter again between attempts. */
export interface Retrier {
  readonly datacenter: string;
  /** The endpoint the next attempt goes to. */
  endpoint(): string;
  /** Looks the endpoint up again and opens a fresh connection to it. */
  reconnect(): Promise<void>;
}

/**
 * Runs `attempt`; on UNAVAILABLE, waits (200 ms doubling to 3 s), re-resolves and tries again
 * until `totalMs` has passed, then fails naming the datacenter, every endpoint tried and the fix.
 * Any other error is the caller's at once.
 */
export async function withRetry<T>(
  target: Retrier,
  method: string,
  opts: RetryOptions,
  attempt: () => Promise<T>,
): Promise<T> {
  const totalMs = retryBoundMs(opts);
  const started = Date.now();
  const tried = new Set<string>();
  let delay = FIRST_DELAY_MS;
  for (let n = 1; ; n++) {
    tried.add(target.endpoint());
    try {
      return await attempt();
    } catch (e) {
      if (!isUnavailable(e)) throw e;
      const elapsedMs = Date.now() - started;
      if (elapsedMs >= totalMs) throw gaveUp(target.datacenter, method, totalMs, tried, e);
      opts.onRetry?.({ datacenter: target.datacenter, method, attempt: n, elapsedMs, error: e });
      // The last wait is cut to the bound, so the last attempt is sent at it, not before.
      await new Promise((r) => setTimeout(r, Math.min(delay, totalMs - elapsedMs)));
      delay = Math.min(delay * 2, MAX_DELAY_MS);
      await target.reconnect();
    }
  }
}

/** 30000 -> "30", 1500 -> "1.5". */
const inSeconds = (ms: number): string => String(Math.round(ms / 100) / 10);

function gaveUp(datacenter: string, method: string, totalMs: number, tried: Set<string>, last: GciError) {
  return unavailable(
    `datacenter ${datacenter} did not answer ${method} for ${inSeconds(totalMs)} s ` +
      `(endpoints tried: ${[...tried].join(", ")}; last error: ${last.message}): ` +
      "see whether its cluster manager runs with `gci world status`, start it with `gci world up`",
  );
}
