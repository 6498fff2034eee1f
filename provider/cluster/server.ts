/**
 * The cluster manager of one datacenter: a composition root that opens the catalog and the
 * image store, builds the parts (transfers, instances, collector, operations), serves the
 * gRPC modules under ./services and registers the datacenter; and stops it all again.
 */

import * as path from "path";
import * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";
import { Catalog, openCatalog } from "../catalog";
import { invalid } from "../common/errors";
import { ImageStore } from "../image";
import { SERVER_OPTIONS, loadApi, loadHealthDefinition } from "../common/rpc/proto";
import { COLLECT_INTERVAL_MS, Collector, CopyUse } from "./collector";
import { InstanceManager } from "./instances";
import { Logger } from "./log";
import { Operations } from "./operations";
import type { ClusterContext } from "./services/context";
import { imageHandlers } from "./services/images";
import { operationHandlers, peerHandlers } from "./services/peer";
import { Starts } from "./services/start";
import { vmHandlers } from "./services/vms";
import { ImagePuller } from "./transfer";
import { cgroupSupport } from "./vm/cgroup";
import { probeAcceleratorNow } from "./vm/qemu";

export { MAX_CONCURRENT_UPLOADS } from "./services/images";
/** How a cluster manager is configured. */
export interface ClusterManagerArgs {
  /** The datacenter it manages, e.g. "us-1". */
  readonly datacenter: string;
  readonly region: string;
  /** Its data folder: the image store lives under <dataDir>/images. */
  readonly dataDir: string;
  /** The catalog location: "sqlite:/abs/path" or "etcd://host:port,...". */
  readonly catalog: string;
  /**
   * Address to listen on.
   * @default "127.0.0.1"
   */
  readonly host?: string;
  /**
   * Port to listen on; 0 picks a free one.
   * @default 0
   */
  readonly port?: number;
  /**
   * What the datacenter can run at once.
   * @default { vcpus: 16, memoryMiB: 32768 }
   */
  readonly capacity?: { vcpus: number; memoryMiB: number };
  /**
   * Caps outgoing peer transfers, in bytes per second; 0 means no cap.
   * @default 0
   */
  readonly maxTransferRate?: number;
  /**
   * The largest image archive this datacenter accepts, in bytes, by upload or by transfer from
   * another datacenter; larger ones are refused with RESOURCE_EXHAUSTED.
   * @default DEFAULT_MAX_UPLOAD_BYTES (4 GiB)
   */
  readonly maxUploadBytes?: number;
  /**
   * How long a chunk of a failed transfer is kept for a retry before the collector frees it
   * (see provider/cluster/collector.ts), in milliseconds.
   * @default GC_GRACE_MS (1 hour)
   */
  readonly chunkGraceMs?: number;
  /**
   * How long a transfer keeps retrying (its sources may be restarting) before it gives up and
   * its placement is "failed", in milliseconds.
   * @default RETRY_FOR_MS (60 s)
   */
  readonly transferRetryMs?: number;
  /** Where log lines go. @default stdout */
  readonly logStream?: NodeJS.WritableStream;
}

const HEARTBEAT_MS = 2000;
const MiB = 1024 * 1024;
/** The largest archive a datacenter accepts unless told otherwise (--max-upload-bytes). */
export const DEFAULT_MAX_UPLOAD_BYTES = 4 * 1024 * MiB;
/** The services the health service reports on: "" is the whole server. */
const HEALTH_SERVICES = ["", "gci.v1.ClusterManager", "gci.v1.Peer"];

/** One datacenter's cluster manager: a gRPC server for images, VMs, operations and peer transfer. */
export class ClusterManager {
  readonly log: Logger;
  private readonly server = new grpc.Server(SERVER_OPTIONS);
  /** SERVING while the daemon serves; NOT_SERVING from the moment it begins to stop. */
  private readonly health = new HealthImplementation(
    Object.fromEntries(HEALTH_SERVICES.map((s) => [s, "SERVING" as const])),
  );
  private readonly ops: Operations;
  private catalog!: Catalog;
  private instances!: InstanceManager;
  private collector!: Collector;
  private heartbeat?: NodeJS.Timeout;
  private collectTimer?: NodeJS.Timeout;
  private endpoint = "";

  constructor(private readonly args: ClusterManagerArgs) {
    const max = args.maxUploadBytes;
    if (max !== undefined && (!Number.isSafeInteger(max) || max < 1)) {
      throw invalid(
        `maxUploadBytes ${String(max)} is not valid: give the largest image archive the datacenter ` +
          `accepts as a whole number of bytes, e.g. --max-upload-bytes ${DEFAULT_MAX_UPLOAD_BYTES}`,
      );
    }
    checkMs("chunkGraceMs", "--chunk-grace-ms", args.chunkGraceMs);
    checkMs("transferRetryMs", "--transfer-retry-ms", args.transferRetryMs);
    this.log = new Logger(args.datacenter, args.logStream);
    this.ops = new Operations(args.datacenter);
  }

  get name(): string {
    return this.args.datacenter;
  }

  /** Opens the catalog and store, starts serving, registers the datacenter; returns its endpoint. */
  async start(): Promise<string> {
    // A record written around GCI is left out of lists, and named in this datacenter's log.
    this.catalog = await openCatalog(this.args.catalog, {
      onBadRecord: (e) => this.log.warn("catalog.bad_record", { error: e.message }),
    });
    const ctx = this.context();
    this.instances = ctx.instances;
    this.collector = ctx.collector;
    const starts = new Starts(ctx);
    this.addServices(ctx, starts);
    await this.listen();
    await this.register();
    this.log.info("started", { endpoint: this.endpoint, region: this.args.region, pid: process.pid });
    const cgroups = cgroupSupport();
    if (cgroups.version === 0) {
      this.log.warn("limits.unavailable", {
        error: `process instances run without CPU and memory limits: ${cgroups.reason}`,
      });
    }
    this.probeAccelerator();
    await this.instances.recover();
    await ctx.puller.resumeInterrupted();
    // What a crash left (bytes no placement names, extracted images of deleted images) goes now.
    await this.collector.collect("start");
    starts.resumeGroups();
    this.instances.startWatchdog();
    this.collectTimer = setInterval(() => void this.collector.collect("timer"), COLLECT_INTERVAL_MS);
    this.collectTimer.unref();
    return this.endpoint;
  }

  /** The parts every handler module shares, over the open catalog. */
  private context(): ClusterContext {
    const { datacenter, region } = this.args;
    const { catalog, log } = this;
    const maxUploadBytes = this.args.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES;
    const store = new ImageStore(path.join(this.args.dataDir, "images"));
    const retryForMs = this.args.transferRetryMs;
    const puller = new ImagePuller({
      datacenter,
      region,
      maxImageBytes: maxUploadBytes,
      store,
      catalog,
      log,
      retryForMs,
    });
    const instances = new InstanceManager({ datacenter, dataDir: this.args.dataDir, store, catalog, log });
    const copyUse = new CopyUse();
    const collector = new Collector({
      datacenter,
      store,
      catalog,
      instances,
      use: copyUse,
      log,
      liveChunks: () => puller.liveChunks(),
      chunkGraceMs: this.args.chunkGraceMs,
    });
    return {
      name: datacenter,
      region,
      host: this.args.host ?? "127.0.0.1",
      maxUploadBytes,
      maxTransferRate: this.args.maxTransferRate ?? 0,
      catalog,
      log,
      store,
      puller,
      instances,
      collector,
      ops: this.ops,
      copyUse,
      deleting: new Set<string>(),
    };
  }

  private async listen(): Promise<void> {
    const host = this.args.host ?? "127.0.0.1";
    const port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(
        `${host}:${this.args.port ?? 0}`,
        grpc.ServerCredentials.createInsecure(),
        (e, p) => (e ? reject(e) : resolve(p)),
      ),
    );
    this.endpoint = `${host}:${port}`;
  }

  /** Records the datacenter (its endpoint, region and capacity) and keeps its heartbeat. */
  private async register(): Promise<void> {
    const { datacenter, region } = this.args;
    const existing = await this.catalog.getDatacenter(datacenter);
    const capacity = this.args.capacity ?? existing?.capacity ?? { vcpus: 16, memoryMiB: 32768 };
    await this.catalog.putDatacenter({
      name: datacenter,
      region,
      endpoint: this.endpoint,
      capacity,
      heartbeatAt: Date.now(),
    });
    this.heartbeat = setInterval(() => {
      this.catalog
        .heartbeat(datacenter, Date.now())
        .catch((e) => this.log.warn("heartbeat.failed", { error: String(e) }));
    }, HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  /** The KVM probe, in the background from the start: a user's first boot would wait for it. */
  private probeAccelerator(): void {
    const failed = (e: unknown) => this.log.warn("qemu.accelerator.failed", { error: String(e) });
    try {
      probeAcceleratorNow()?.then(
        (choice) => this.log.info("qemu.accelerator", { accel: choice.accel, reason: choice.reason }),
        failed,
      );
    } catch (e) {
      failed(e);
    }
  }

  /**
   * Stops serving (in-flight calls get up to `graceMs`), then closes the catalog. With
   * `stopInstances` (a datacenter shutting down, e.g. `gci world down`), its VMs and process
   * instances are stopped too; without it they keep running and a restart finds them again.
   * Health reports NOT_SERVING from the start, so a watcher knows before the server goes.
   */
  async stop(graceMs = 5000, stopInstances = false): Promise<void> {
    for (const service of HEALTH_SERVICES) this.health.setStatus(service, "NOT_SERVING");
    clearInterval(this.heartbeat);
    clearInterval(this.collectTimer);
    this.collector?.stop();
    // No instance is restarted behind a shutdown's back (or under a stop of them all).
    await this.instances?.stopWatchdog();
    if (stopInstances)
      await this.instances?.stopAll().catch((e) => this.log.warn("stop_all.failed", { error: String(e) }));
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    await this.catalog?.close();
    this.log.info("stopped");
  }

  private addServices(ctx: ClusterContext, starts: Starts): void {
    const { api, definition } = loadApi();
    this.server.addService(api.gci.v1.ClusterManager.service, {
      ...imageHandlers(ctx),
      ...vmHandlers(ctx, starts),
      ...operationHandlers(ctx),
    });
    this.server.addService(api.gci.v1.Peer.service, peerHandlers(ctx));
    this.health.addToServer(this.server);
    // Reflection describes the health service too, so stock tools can call it by name.
    new ReflectionService({ ...definition, ...loadHealthDefinition() }).addToServer(this.server);
  }
}

/** Refuses a duration option that is not a whole number of milliseconds, naming its flag. */
function checkMs(field: string, flag: string, value: number | undefined): void {
  if (value === undefined || (Number.isSafeInteger(value) && value >= 0)) return;
  throw invalid(
    `${field} ${String(value)} is not valid: give a whole number of milliseconds, 0 or more, e.g. ${flag} 60000`,
  );
}
