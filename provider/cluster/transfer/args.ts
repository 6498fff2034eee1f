/** What a pull is given (its datacenter, store, catalog, log) and what it shares while it runs. */
import type { TransferSummary } from "../../../schema/gen/gci/v1/TransferSummary";
import type { Catalog } from "../../catalog";
import type { ImageStore } from "../../image";
import type { Logger } from "../log";

/** Where a puller lives: its datacenter, store, catalog and log. */
export interface PullerArgs {
  readonly datacenter: string;
  readonly region: string;
  /** The largest image this datacenter accepts (its --max-upload-bytes). */
  readonly maxImageBytes: number;
  readonly store: ImageStore;
  readonly catalog: Catalog;
  readonly log: Logger;
  /** How long a pull keeps retrying before its placement is "failed" (--transfer-retry-ms). @default RETRY_FOR_MS */
  readonly retryForMs?: number;
}

/** One pull running in this process: how to cancel it, and the chunks it relies on. */
export interface Pull {
  done: Promise<TransferSummary | undefined>;
  readonly cancel: AbortController;
  /** The chunks the collector must keep for it: those it said it held, then its image's layout. */
  chunks: ReadonlySet<string>;
}
