import type * as pulumi from "@pulumi/pulumi";
import { openCatalog } from "../../catalog";
import { checkName, checkPositive, isEndpoint } from "../../catalog/validate";
import { ClusterClient } from "../../common/client";
import { GciError, invalid } from "../../common/errors";
import { Failures } from "./inputs";
import { notImportable } from "./import";

/** The inputs of a Datacenter as the engine stores them. */
export interface DatacenterInputs {
  readonly catalog: string;
  readonly region: string;
  readonly name: string;
  readonly endpoint: string;
  readonly vcpus: number;
  readonly memoryMiB: number;
  /** Refuse to register a datacenter whose cluster manager does not answer SERVING (absent = true). */
  readonly requireHealthy?: boolean;
}

const HEALTH_TIMEOUT_MS = 10_000;

/** Asks the cluster manager's standard health service, bounded; throws UNAVAILABLE naming the fix. */
async function checkHealthy(inputs: DatacenterInputs): Promise<void> {
  if (inputs.requireHealthy === false) return;
  const client = new ClusterClient(inputs.endpoint);
  try {
    const status = await client.checkHealth(HEALTH_TIMEOUT_MS).catch((e: unknown) => {
      throw new GciError(
        "UNAVAILABLE",
        `the cluster manager of ${inputs.name} at ${inputs.endpoint} did not answer its health check within ` +
          `${HEALTH_TIMEOUT_MS / 1000} s (${GciError.isInstance(e) ? e.message : String(e)}): start it ` +
          "(`gci world up`) or set requireHealthy: false to register it anyway",
      );
    });
    if (status !== "SERVING") {
      throw new GciError(
        "UNAVAILABLE",
        `the cluster manager of ${inputs.name} at ${inputs.endpoint} is ${status}, not SERVING`,
      );
    }
    console.log(`gci: ${inputs.name}: cluster manager at ${inputs.endpoint} is SERVING`);
  } finally {
    client.close();
  }
}

function checkEndpoint(v: unknown): string {
  if (!isEndpoint(v))
    throw invalid(`endpoint ${JSON.stringify(v)} is not host:port: write it like "127.0.0.1:7001"`);
  return v;
}

function checkCatalogUrl(v: unknown): string {
  if (typeof v !== "string" || !/^(sqlite:\/|etcd:\/\/)/.test(v)) {
    throw invalid(
      `catalog ${JSON.stringify(v)} is not a catalog location: use "sqlite:/abs/path/catalog.db" or ` +
        `"etcd://host:port,host:port" (or pass gci.Catalog.fromStackOutput(...))`,
    );
  }
  return v;
}

/** Records a datacenter of a region, with its cluster manager's endpoint, in the catalog. */
export const datacenterHandlers: pulumi.dynamic.ResourceProvider = {
  async check(_olds, news) {
    const f = new Failures();
    f.field("catalog", news.catalog, checkCatalogUrl);
    f.field("region", news.region, (v) => checkName("region", v));
    f.field("name", news.name, (v) => checkName("datacenter name", v));
    f.field("endpoint", news.endpoint, checkEndpoint);
    f.field("vcpus", news.vcpus, (v) => checkPositive("vcpus", v));
    f.field("memoryMiB", news.memoryMiB, (v) => checkPositive("memoryMiB", v));
    return { inputs: news, failures: f.list };
  },

  async diff(_id, olds: DatacenterInputs, news: DatacenterInputs) {
    const keys = ["catalog", "region", "name", "endpoint", "vcpus", "memoryMiB"] as const;
    const changed = keys.filter((k) => olds[k] !== news[k]);
    const replaces = changed.filter((k) => k === "catalog" || k === "name" || k === "region");
    return { changes: changed.length > 0, replaces, deleteBeforeReplace: replaces.length > 0 };
  },

  async create(inputs: DatacenterInputs) {
    await checkHealthy(inputs);
    const catalog = await openCatalog(inputs.catalog);
    try {
      await catalog.putDatacenter(record(inputs));
    } finally {
      await catalog.close();
    }
    return { id: inputs.name, outs: inputs };
  },

  async update(_id, _olds: DatacenterInputs, news: DatacenterInputs) {
    await checkHealthy(news);
    const catalog = await openCatalog(news.catalog);
    try {
      const current = await catalog.getDatacenter(news.name);
      await catalog.putDatacenter({ ...record(news), heartbeatAt: current?.heartbeatAt ?? 0 });
    } finally {
      await catalog.close();
    }
    return { outs: news };
  },

  async read(id, props: DatacenterInputs) {
    if (props.catalog === undefined) {
      throw notImportable("Datacenter", "declare it in the program; registering is idempotent");
    }
    const catalog = await openCatalog(props.catalog);
    try {
      const dc = await catalog.getDatacenter(id);
      // An empty id tells the engine the resource is gone.
      if (!dc) return { id: "", props: {} };
      return {
        id,
        props: {
          ...props,
          region: dc.region,
          endpoint: dc.endpoint,
          vcpus: dc.capacity.vcpus,
          memoryMiB: dc.capacity.memoryMiB,
        },
      };
    } finally {
      await catalog.close();
    }
  },

  async delete(id, props: DatacenterInputs) {
    const catalog = await openCatalog(props.catalog);
    try {
      await catalog.deleteDatacenter(id);
    } finally {
      await catalog.close();
    }
  },
};

function record(inputs: DatacenterInputs) {
  return {
    name: inputs.name,
    region: inputs.region,
    endpoint: inputs.endpoint,
    capacity: { vcpus: inputs.vcpus, memoryMiB: inputs.memoryMiB },
    heartbeatAt: 0,
  };
}
