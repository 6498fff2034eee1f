/** Following an operation of a cluster manager until it is done (waitForOperation). */
import * as grpc from "@grpc/grpc-js";
import type { Operation__Output as Operation } from "../../../schema/gen/gci/v1/Operation";
import { fromStatus } from "../rpc/status";
import { isNotFound } from "./retry";

/** What waitForOperation needs of a client: its WaitOperation call. */
export interface OperationWaiter {
  waitOperation(id: string, timeoutMs: number): Promise<Operation>;
}

/** Options of waitForOperation. */
export interface WaitOptions {
  readonly timeoutMs: number;
  readonly onProgress?: (op: Operation) => void;
  /**
   * Sends the operation's request again, with the same request id. Operations live in the
   * cluster manager's memory: after it restarted, WaitOperation answers NOT_FOUND for ours.
   * The request is idempotent on the server, so sending it again finds the work done so far
   * (in the catalog) and answers a new operation to follow.
   * @default none: NOT_FOUND is the caller's
   */
  readonly reissue?: () => Promise<Operation>;
}

/** Re-issues allowed for one wait: each one is a restart of the cluster manager meanwhile. */
const MAX_REISSUES = 5;

/**
 * Polls an operation until it is done, reporting each state to `onProgress` (four times a
 * second), and fails after `timeoutMs`. Throws the operation's error as a GciError.
 */
export async function waitForOperation(
  client: OperationWaiter,
  op: Operation,
  opts: WaitOptions,
): Promise<Operation> {
  const deadline = Date.now() + opts.timeoutMs;
  let current = op;
  let reissues = 0;
  while (!current.done) {
    opts.onProgress?.(current);
    const left = deadline - Date.now();
    if (left <= 0) {
      throw fromStatus({
        code: grpc.status.DEADLINE_EXCEEDED,
        details: `operation ${op.id} still running after ${opts.timeoutMs} ms: check it with \`gci transfers\``,
        message: "",
      });
    }
    try {
      // A short wait, so progress (bytes, instances ready) is reported several times a second.
      current = await client.waitOperation(current.id, Math.min(250, left));
    } catch (e) {
      if (!opts.reissue || !isNotFound(e) || reissues >= MAX_REISSUES) throw e;
      reissues++;
      current = await opts.reissue();
    }
  }
  opts.onProgress?.(current);
  if (current.error)
    throw fromStatus({
      code: grpc.status[current.error_code as keyof typeof grpc.status] ?? 13,
      details: current.error,
      message: "",
    });
  return current;
}
