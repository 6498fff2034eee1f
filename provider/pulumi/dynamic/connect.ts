import { Catalog, openCatalog } from "../../catalog";
import { ClusterClient, RetryOptions } from "../../common/client";
import { notFound } from "../../common/errors";
import { CatalogOutput, findDatacenter, knownDatacenters } from "./topology";

/**
 * The connections one handler call needs: the live catalog (opened on first use) and a client
 * per datacenter. Created inside each handler and closed at its end, so the provider closure
 * in the state captures nothing but configuration.
 */
export class WorldConnection {
  private catalogHandle?: Promise<Catalog>;
  private readonly clients = new Map<string, ClusterClient>();

  constructor(
    readonly topology: CatalogOutput,
    private readonly retry: RetryOptions = {},
  ) {}

  /** The live catalog named by the stack output. */
  catalog(): Promise<Catalog> {
    this.catalogHandle ??= openCatalog(this.topology.catalog);
    return this.catalogHandle;
  }

  /**
   * A client of a datacenter's cluster manager. The endpoint comes from the stack output,
   * unless the live catalog records a newer one (the world was restarted since the platform
   * stack ran): cluster managers write their endpoint there when they start. When the cluster
   * manager stops answering, the client looks there again and retries idempotent calls.
   */
  async client(datacenter: string): Promise<ClusterClient> {
    const cached = this.clients.get(datacenter);
    if (cached) return cached;
    const endpoint = await this.endpoint(datacenter);
    if (!endpoint) {
      throw notFound(
        `datacenter "${datacenter}" is neither in the catalog stack output nor in the live catalog ` +
          `(known: ${knownDatacenters(this.topology)}): check the name or re-run the platform stack`,
      );
    }
    const client = new ClusterClient(endpoint, {
      datacenter: { name: datacenter, resolve: () => this.endpoint(datacenter) },
      retry: this.retry,
    });
    this.clients.set(datacenter, client);
    return client;
  }

  private async endpoint(datacenter: string): Promise<string | undefined> {
    const live = await (await this.catalog()).getDatacenter(datacenter);
    return live?.endpoint ?? findDatacenter(this.topology, datacenter)?.endpoint;
  }

  async close(): Promise<void> {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
    if (this.catalogHandle) await (await this.catalogHandle.catch(() => undefined))?.close();
  }
}

/** Runs `fn` with a fresh WorldConnection and closes it afterwards. */
export async function withWorld<T>(
  topology: CatalogOutput,
  fn: (world: WorldConnection) => Promise<T>,
): Promise<T> {
  const world = new WorldConnection(topology);
  try {
    return await fn(world);
  } finally {
    await world.close();
  }
}
