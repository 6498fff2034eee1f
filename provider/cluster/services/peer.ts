/**
 * The peer API and the operations API of a cluster manager: TransmitImage (another datacenter
 * pulling a copy from this one, see ../transfer.ts), and GetOperation, WaitOperation and
 * ListOperations over ../operations.ts.
 */

import type { ClusterManagerHandlers } from "../../../schema/gen/gci/v1/ClusterManager";
import type { PeerHandlers } from "../../../schema/gen/gci/v1/Peer";
import { unary } from "../../common/rpc/status";
import { transmit } from "../transfer";
import type { ClusterContext } from "./context";

export function peerHandlers(ctx: ClusterContext): PeerHandlers {
  return {
    TransmitImage: (call) => {
      ctx.log.info("transmit.requested", {
        requestId: call.request.request_id,
        digest: call.request.digest,
        to: call.request.receiver,
        heldChunks: call.request.held_chunks.length,
      });
      const done = ctx.copyUse.read(call.request.digest, `a transfer to ${call.request.receiver}`);
      void transmit(ctx.store, ctx.log, call, ctx.maxTransferRate, ctx.host).finally(done);
    },
  };
}

type OperationHandlers = Pick<ClusterManagerHandlers, "GetOperation" | "WaitOperation" | "ListOperations">;

export function operationHandlers(ctx: ClusterContext): OperationHandlers {
  return {
    GetOperation: unary(async (req) => ctx.ops.get(req.id)),
    WaitOperation: unary(async (req) => ctx.ops.wait(req.id, req.timeout_ms || 10_000)),
    ListOperations: unary(async (req) => ({ operations: ctx.ops.list(req.include_done) })),
  };
}
