/**
 * What every gRPC handler module of a cluster manager shares: its parts (catalog, store,
 * transfers, instances, collector, operations) and its settings, built once by ClusterManager.
 */

import type { Operation } from "../../../schema/gen/gci/v1/Operation";
import type { Catalog } from "../../catalog";
import type { ImageStore } from "../../image";
import type { Collector, CopyUse } from "../collector";
import type { ForwardFrom } from "../forwarding";
import type { InstanceManager } from "../instances";
import type { Logger } from "../log";
import type { Operations } from "../operations";
import type { ImagePuller } from "../transfer";

export interface ClusterContext extends ForwardFrom {
  readonly region: string;
  /** The address the server listens on; transfers out open their data connections there too. */
  readonly host: string;
  readonly maxUploadBytes: number;
  readonly maxTransferRate: number;
  readonly catalog: Catalog;
  readonly log: Logger;
  readonly store: ImageStore;
  readonly puller: ImagePuller;
  readonly instances: InstanceManager;
  readonly collector: Collector;
  readonly ops: Operations;
  /** Readers of stored copies (transfers out, uploads), so a copy is not deleted under them. */
  readonly copyUse: CopyUse;
  /** Digests DeleteImage is deleting here now; a start of one waits for a retry. */
  readonly deleting: Set<string>;
}

/** Runs `work` as an operation keyed by the request id; a repeated request returns it again. */
export function runOperation(
  ctx: ClusterContext,
  opId: string,
  kind: string,
  work: () => Promise<Partial<Operation>>,
): Operation {
  const { op, created } = ctx.ops.begin(opId, kind);
  if (!created) return op;
  work().then(
    (result) => ctx.ops.finish(opId, { progress: { phase: "done" }, ...result }),
    (e) => ctx.ops.fail(opId, e),
  );
  return ctx.ops.get(opId);
}
