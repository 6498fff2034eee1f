import * as path from "path";
import * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";
import type { ClusterManagerHandlers } from "../../schema/gen/gci/v1/ClusterManager";
import type { Image } from "../../schema/gen/gci/v1/Image";
import type { Operation } from "../../schema/gen/gci/v1/Operation";
import type { PeerHandlers } from "../../schema/gen/gci/v1/Peer";
import type { ReplicateImageRequest__Output } from "../../schema/gen/gci/v1/ReplicateImageRequest";
import type { ScaleVmsRequest__Output } from "../../schema/gen/gci/v1/ScaleVmsRequest";
import type { StartPlan } from "../../schema/gen/gci/v1/StartPlan";
import type { StartVmsRequest__Output } from "../../schema/gen/gci/v1/StartVmsRequest";
import type { StopVmsRequest__Output } from "../../schema/gen/gci/v1/StopVmsRequest";
import type { TransferSummary } from "../../schema/gen/gci/v1/TransferSummary";
import type { UploadHeader__Output } from "../../schema/gen/gci/v1/UploadHeader";
import type { Vm__Output } from "../../schema/gen/gci/v1/Vm";
import { Catalog, DatacenterRecord, openCatalog, VmGroupRecord, VmRecord } from "../catalog";
import { checkDigest, checkId, checkVmId } from "../catalog/validate";
import { ClusterClient } from "../common/client";
import { exhausted, GciError, invalid, notFound, precondition, unavailable } from "../common/errors";
import { type ImageEntry, ImageStore } from "../image";
import { SERVER_OPTIONS, loadApi, loadHealthDefinition } from "../common/rpc/proto";
import { toStatus, unary } from "../common/rpc/status";
import { MACHINE_SIZES, MachineSize, machineSize } from "../common/sizes";
import { COLLECT_INTERVAL_MS, Collector, CopyUse } from "./collector";
import { failpoint } from "./failpoint";
import { HOPS_KEY, nextHop, routeOf } from "./forwarding";
import { InstanceManager } from "./instances";
import { Logger } from "./log";
import { Operations } from "./operations";
import { ImagePuller, removedWhileTransferring, transmit } from "./transfer";
import { UPLOAD_BUFFER_BYTES, type UploadCall, receiveUpload } from "./upload";
import { cgroupSupport } from "./vm/cgroup";
import { probeAcceleratorNow } from "./vm/qemu";

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
/** Uploads one cluster manager receives at once (each holds UPLOAD_BUFFER_BYTES and a message). */
export const MAX_CONCURRENT_UPLOADS = 8;
/** The largest archive a datacenter accepts unless told otherwise (--max-upload-bytes). */
export const DEFAULT_MAX_UPLOAD_BYTES = 4 * 1024 * MiB;
const MAX_COUNT = 1000;
/** How long DeleteImage waits for transfers out that are ending (their receiver removed the image). */
const TRANSFERS_OUT_WAIT_MS = 3000;

/** What a forward needs of the call it forwards: its metadata, which carries the route. */
type Incoming = Pick<grpc.ServerUnaryCall<unknown, unknown>, "metadata">;

/** One datacenter's cluster manager: a gRPC server for images, VMs, operations and peer transfer. */
export class ClusterManager {
  readonly log: Logger;
  private readonly server = new grpc.Server(SERVER_OPTIONS);
  private readonly ops: Operations;
  private catalog!: Catalog;
  private store!: ImageStore;
  private puller!: ImagePuller;
  private instances!: InstanceManager;
  private collector!: Collector;
  /** Readers of stored copies (transfers out, uploads), so a copy is not deleted under them. */
  private readonly copyUse = new CopyUse();
  /** Digests DeleteImage is deleting here now; a start of one waits for a retry. */
  private readonly deleting = new Set<string>();
  private heartbeat?: NodeJS.Timeout;
  private collectTimer?: NodeJS.Timeout;
  private endpoint = "";
  /** Uploads being received now. */
  private uploads = 0;

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
    const { datacenter, region } = this.args;
    // A record written around GCI is left out of lists, and named in this datacenter's log.
    this.catalog = await openCatalog(this.args.catalog, {
      onBadRecord: (e) => this.log.warn("catalog.bad_record", { error: e.message }),
    });
    this.store = new ImageStore(path.join(this.args.dataDir, "images"));
    this.puller = new ImagePuller({
      datacenter,
      region,
      maxImageBytes: this.args.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES,
      store: this.store,
      catalog: this.catalog,
      log: this.log,
      retryForMs: this.args.transferRetryMs,
    });
    this.instances = new InstanceManager({
      datacenter,
      dataDir: this.args.dataDir,
      store: this.store,
      catalog: this.catalog,
      log: this.log,
    });
    this.collector = new Collector({
      datacenter,
      store: this.store,
      catalog: this.catalog,
      instances: this.instances,
      use: this.copyUse,
      log: this.log,
      liveChunks: () => this.puller.liveChunks(),
      chunkGraceMs: this.args.chunkGraceMs,
    });
    this.addServices();
    const host = this.args.host ?? "127.0.0.1";
    const port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(
        `${host}:${this.args.port ?? 0}`,
        grpc.ServerCredentials.createInsecure(),
        (e, p) => (e ? reject(e) : resolve(p)),
      ),
    );
    this.endpoint = `${host}:${port}`;
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
    this.log.info("started", { endpoint: this.endpoint, region, pid: process.pid });
    const cgroups = cgroupSupport();
    if (cgroups.version === 0) {
      this.log.warn("limits.unavailable", {
        error: `process instances run without CPU and memory limits: ${cgroups.reason}`,
      });
    }
    this.probeAccelerator();
    await this.instances.recover();
    await this.puller.resumeInterrupted();
    // What a crash left (bytes no placement names, extracted images of deleted images) goes now.
    await this.collector.collect("start");
    this.resumeGroups();
    this.instances.startWatchdog();
    this.collectTimer = setInterval(() => void this.collector.collect("timer"), COLLECT_INTERVAL_MS);
    this.collectTimer.unref();
    return this.endpoint;
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
   */
  async stop(graceMs = 5000, stopInstances = false): Promise<void> {
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

  private addServices(): void {
    const { api, definition } = loadApi();
    this.server.addService(api.gci.v1.ClusterManager.service, this.clusterHandlers());
    this.server.addService(api.gci.v1.Peer.service, this.peerHandlers());
    new HealthImplementation({
      "": "SERVING",
      "gci.v1.ClusterManager": "SERVING",
      "gci.v1.Peer": "SERVING",
    }).addToServer(this.server);
    // Reflection describes the health service too, so stock tools can call it by name.
    new ReflectionService({ ...definition, ...loadHealthDefinition() }).addToServer(this.server);
  }

  private peerHandlers(): PeerHandlers {
    return {
      TransmitImage: (call) => {
        this.log.info("transmit.requested", {
          requestId: call.request.request_id,
          digest: call.request.digest,
          to: call.request.receiver,
          heldChunks: call.request.held_chunks.length,
        });
        const done = this.copyUse.read(call.request.digest, `a transfer to ${call.request.receiver}`);
        void transmit(
          this.store,
          this.log,
          call,
          this.args.maxTransferRate ?? 0,
          this.args.host ?? "127.0.0.1",
        ).finally(done);
      },
    };
  }

  private clusterHandlers(): ClusterManagerHandlers {
    return {
      UploadImage: (call, callback) => {
        this.upload(call).then(
          (img) => callback(null, img),
          (e) => callback(toStatus(e) as grpc.ServiceError),
        );
      },
      GetImage: unary(async (req) => this.describeImage(checkDigest(req.digest))),
      ListImages: unary(async (req) => {
        const images = await Promise.all(
          (await this.catalog.listImages()).map((i) => this.describeImage(i.digest)),
        );
        return { images: req.local_only ? images.filter((i) => i.datacenters?.includes(this.name)) : images };
      }),
      DeleteImage: unary(async (req) =>
        this.deleteImage(checkId("request_id", req.request_id), checkDigest(req.digest)),
      ),
      StartVms: unary(async (req, call) => this.startVms(req, call)),
      ListVms: unary(async (req) => {
        // The catalog is global: one start request's VMs are listed wherever they run.
        const records = await this.catalog.listVms(
          req.request_id ? { requestId: req.request_id } : { datacenter: this.name },
        );
        // One catalog read per group, not two per VM.
        const groups = new Map(
          await Promise.all(
            [...new Set(records.map((v) => v.requestId))].map(
              async (id) => [id, await this.groupForListing(id)] as const,
            ),
          ),
        );
        return { vms: records.map((v) => vmOutput(v, groups.get(v.requestId))) };
      }),
      PlanStartVms: unary(async (req) => this.planStart(req)),
      ScaleVms: unary(async (req, call) => this.scaleVms(req, call)),
      GetVm: unary(async (req) => this.vm(req.id)),
      StopVms: unary(async (req, call) => this.stopVms(req, call)),
      RestartVm: unary(async (req, call) => {
        const requestId = checkId("request_id", req.request_id);
        const vm = await this.vm(req.vm_id);
        if (vm.datacenter !== this.name) {
          const remote = await this.ownerClient(call, `RestartVm of ${vm.id}`, vm.datacenter);
          return withClient(remote, (c) => c.restartVm(requestId, vm.id));
        }
        return this.operation(`restart-${requestId}`, "restart_vm", async () => {
          await this.instances.restart(vm.id);
          return {};
        });
      }),
      GetVmLogs: unary(async (req, call) => {
        const vm = await this.vm(req.vm_id);
        if (vm.datacenter !== this.name) {
          const remote = await this.ownerClient(call, `GetVmLogs of ${vm.id}`, vm.datacenter);
          return withClient(remote, async (c) => ({
            vm_id: vm.id,
            text: await c.getVmLogs(vm.id, req.tail_bytes),
          }));
        }
        return { vm_id: vm.id, text: this.instances.logs(vm.id, req.tail_bytes || 65536) };
      }),
      ReplicateImage: unary(async (req, call) => this.replicate(req, call)),
      GetOperation: unary(async (req) => this.ops.get(req.id)),
      WaitOperation: unary(async (req) => this.ops.wait(req.id, req.timeout_ms || 10_000)),
      ListOperations: unary(async (req) => ({ operations: this.ops.list(req.include_done) })),
    };
  }

  /** UploadImage, within MAX_CONCURRENT_UPLOADS at once: a header, then the archive's bytes. */
  private async upload(call: UploadCall): Promise<Image> {
    if (this.uploads >= MAX_CONCURRENT_UPLOADS) {
      call.destroy();
      throw exhausted(
        `datacenter ${this.name} is receiving ${MAX_CONCURRENT_UPLOADS} uploads at once, its limit ` +
          `(each buffers up to ${UPLOAD_BUFFER_BYTES / MiB} MiB): retry when one of them has finished`,
      );
    }
    this.uploads++;
    try {
      return await this.receiveUpload(call);
    } finally {
      this.uploads--;
    }
  }

  /** Receives an upload (within its limits, see ./upload.ts) into the store, and records it. */
  private async receiveUpload(call: UploadCall): Promise<Image> {
    const upload = receiveUpload(call, this.name, this.args.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES);
    // Until its placement is recorded, the new copy is one the collector must not take.
    const uploaded = this.copyUse.upload();
    try {
      let h: UploadHeader__Output;
      let entry: ImageEntry;
      try {
        h = await upload.header;
        checkId("request_id", h.request_id);
        entry = await this.store.ingest(upload.body, {
          name: h.name || undefined,
          expectedDigest: h.expected_digest || undefined,
        });
      } finally {
        upload.done();
      }
      return await this.record(h, entry);
    } finally {
      uploaded();
    }
  }

  /** Records a stored upload in the catalog: the image, and its copy here as present. */
  private async record(h: UploadHeader__Output, entry: ImageEntry): Promise<Image> {
    await this.catalog.putImage({
      digest: entry.digest,
      name: entry.manifest.name,
      sizeBytes: entry.sizeBytes,
      owner: h.owner || "unknown",
      createdAt: Date.now(),
    });
    await this.catalog.putPlacement({
      digest: entry.digest,
      datacenter: this.name,
      state: "present",
      bytesDone: entry.sizeBytes,
      bytesTotal: entry.sizeBytes,
      error: "",
      updatedAt: Date.now(),
    });
    this.log.info("image.stored", {
      requestId: h.request_id,
      digest: entry.digest,
      name: entry.manifest.name,
      sizeBytes: entry.sizeBytes,
      chunks: entry.chunks.length,
    });
    return this.describeImage(entry.digest);
  }

  private async describeImage(digest: string): Promise<Image> {
    const record = await this.catalog.getImage(digest);
    if (!record) throw notFound(`image ${digest} is not in the catalog: push it with \`gci image push\``);
    const placements = await this.catalog.listPlacements(digest);
    const local = await this.store.get(digest);
    return {
      digest,
      name: record.name,
      size_bytes: record.sizeBytes,
      owner: record.owner,
      datacenters: placements
        .filter((p) => p.state === "present")
        .map((p) => p.datacenter)
        .sort(),
      chunk_count: local?.chunks.length ?? 0,
      driver: local?.manifest.driver ?? "",
      ports: [...(local?.manifest.ports ?? [])],
    };
  }

  /**
   * DeleteImage: this datacenter's copy goes, unless something uses it. The placement goes
   * first and the bytes after, so a crash between the two leaves bytes no placement names
   * (the collector frees them), never a "present" copy without bytes.
   *
   * A removal wins over a transfer of the image into this datacenter (a replica, or one resumed
   * after a restart): the transfer is cancelled, the requests waiting on it fail, its placement
   * goes and its chunks are freed now, even when the copy being transferred in is the only one
   * this datacenter would have. What still refuses it: a VM group or instance here that uses the
   * image (a start's transfer has its group, so it is never cancelled), a claim, and transfers
   * out of this datacenter reading its copy (remove it from the receivers first; `gci image rm
   * --all` does, and a transfer out whose receiver cancelled it is waited for, up to
   * TRANSFERS_OUT_WAIT_MS).
   */
  private async deleteImage(requestId: string, digest: string): Promise<Image> {
    const image = await this.describeImage(digest);
    if (this.deleting.has(digest))
      throw unavailable(`image ${digest} is being deleted from ${this.name}: retry`);
    this.deleting.add(digest);
    try {
      await this.waitForTransfersOut(digest);
      await this.refuseIfUsed(digest);
      const partial = await this.puller.cancel(digest, removedWhileTransferring(digest, this.name));
      await this.catalog.deletePlacement(digest, this.name);
      // A start or transfer that began while the placement was still there: the copy stays.
      if ((await this.copyUsers(digest)).length > 0) {
        await this.restorePlacement(digest, Number(image.size_bytes ?? 0));
        await this.refuseIfUsed(digest);
      }
      const left = (await this.catalog.listPlacements(digest)).filter((p) => p.state === "present");
      if (left.length === 0) await this.catalog.deleteImage(digest);
      failpoint("delete-image.between");
      await this.store.delete(digest);
      this.log.info("image.deleted", { requestId, digest, copiesLeft: left.length });
      await this.collector.collect("image.deleted", partial);
      return { ...image, datacenters: left.map((p) => p.datacenter).sort() };
    } finally {
      this.deleting.delete(digest);
    }
  }

  private async restorePlacement(digest: string, sizeBytes: number): Promise<void> {
    await this.catalog.putPlacement({
      digest,
      datacenter: this.name,
      state: "present",
      bytesDone: sizeBytes,
      bytesTotal: sizeBytes,
      error: "",
      updatedAt: Date.now(),
    });
  }

  /**
   * Waits up to TRANSFERS_OUT_WAIT_MS while transfers out are the only users of the copy: one
   * whose receiver just removed the image (and so cancelled it) ends within moments.
   */
  private async waitForTransfersOut(digest: string): Promise<void> {
    const until = Date.now() + TRANSFERS_OUT_WAIT_MS;
    for (;;) {
      const readers = this.copyUse.readersOf(digest).length;
      if (readers === 0 || Date.now() > until || (await this.copyUsers(digest)).length > readers) return;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** FAILED_PRECONDITION naming every user of this datacenter's copy of `digest`, and the fix. */
  private async refuseIfUsed(digest: string): Promise<void> {
    const users = await this.copyUsers(digest);
    if (users.length === 0) return;
    throw precondition(
      `image ${digest} is used by ${users.join("; ")} in ${this.name}: stop them first (VM groups: ` +
        `gci vm stop <request id>; transfers: wait until they finish; claims: destroy those resources), then retry`,
    );
  }

  /** What uses this datacenter's copy of `digest`: groups, live instances, transfers reading it, claims. */
  private async copyUsers(digest: string): Promise<string[]> {
    const groups = (await this.catalog.listVmGroups(this.name)).filter((g) => g.digest === digest);
    const grouped = new Set(groups.map((g) => g.requestId));
    const live = (await this.catalog.listVms({ datacenter: this.name })).filter(
      (v) =>
        v.digest === digest && !grouped.has(v.requestId) && v.state !== "stopped" && v.state !== "failed",
    );
    const claims = (await this.catalog.listImageRefs(digest)).filter((r) => r.datacenter === this.name);
    const users: string[] = [];
    if (groups.length > 0) users.push(`VM groups ${groups.map((g) => g.requestId).join(", ")}`);
    if (live.length > 0) users.push(`VMs ${live.map((v) => `${v.id} (${v.state})`).join(", ")}`);
    users.push(...this.copyUse.readersOf(digest));
    if (claims.length > 0) users.push(`claims of ${claims.map((r) => r.holder).join(", ")}`);
    return users;
  }

  /** Resolves a request's machine size: a named size, or vCPUs and memory (defaults: micro). */
  private size(req: StartVmsRequest__Output): MachineSize {
    if (req.machine_size) return machineSize(req.machine_size);
    return {
      vcpus: req.vcpus || MACHINE_SIZES.micro.vcpus,
      memoryMiB: req.memory_mib || MACHINE_SIZES.micro.memoryMiB,
    };
  }

  /** Checks a StartVms request's own fields, before anything is looked up. */
  private async checkStart(
    req: StartVmsRequest__Output,
  ): Promise<{ requestId: string; digest: string; size: MachineSize }> {
    const requestId = checkId("request_id", req.request_id);
    const digest = checkDigest(req.image_digest);
    if (!Number.isInteger(req.count) || req.count < 1 || req.count > MAX_COUNT) {
      throw invalid(`count ${req.count} is out of range: ask for 1 to ${MAX_COUNT} VMs`);
    }
    const size = this.size(req);
    if (!(await this.catalog.getImage(digest))) {
      throw notFound(`image ${digest} is not in the catalog: push it first with \`gci image push\``);
    }
    return { requestId, digest, size };
  }

  /** StartVms: forward to the right datacenter, or accept here, bring the image in, and boot. */
  private async startVms(req: StartVmsRequest__Output, call: Incoming): Promise<Operation> {
    const { requestId, digest, size } = await this.checkStart(req);
    const target = await this.pickDatacenter(req);
    if (target.name !== this.name) return this.forward(req, target, call);

    const opId = `start-${requestId}`;
    const { op, created } = this.ops.begin(opId, "start_vms");
    if (!created) return op;
    try {
      if (this.deleting.has(digest)) {
        throw unavailable(`image ${digest} is being deleted from ${this.name}: retry in a moment`);
      }
      // The capacity check and the insert are one catalog transaction: concurrent starts
      // cannot both take the last free room.
      const { group, created } = await this.catalog.createVmGroup({
        requestId,
        datacenter: this.name,
        digest,
        count: req.count,
        vcpus: size.vcpus,
        memoryMiB: size.memoryMiB,
        createdAt: Date.now(),
      });
      if (group.digest !== digest) {
        throw invalid(
          `request id "${requestId}" was already used for image ${group.digest}: use a new request id`,
        );
      }
      this.log.info("start.accepted", {
        requestId,
        digest,
        count: group.count,
        vcpus: group.vcpus,
        memoryMiB: group.memoryMiB,
        forwardedBy: req.forwarded_by || undefined,
        repeated: !created,
      });
      failpoint("start.accepted");
      void this.runStart(opId, group, created);
    } catch (e) {
      this.ops.fail(opId, e);
      // A refused request leaves no operation behind, so a corrected retry with the same id is accepted.
      this.ops.forget(opId);
      throw e;
    }
    return this.ops.get(opId);
  }

  /**
   * After a restart: takes up every VM group recorded for this datacenter, in the background,
   * exactly as a repeated StartVms with its request id would (operation `start-<request id>`,
   * which a client repeating the request follows): the image brought in, the group converged to
   * its count, or the group rolled back when its image can no longer be had. A group a crash
   * left half-started is finished; a running one is left running.
   */
  private resumeGroups(): void {
    this.catalog.listVmGroups(this.name).then(
      (groups) => {
        for (const group of groups) this.resumeGroup(group);
      },
      (e) => this.log.warn("start.resume_failed", { error: String(e) }),
    );
  }

  private resumeGroup(group: VmGroupRecord): void {
    const opId = `start-${group.requestId}`;
    // A client that repeated the request first has its operation running the same path.
    if (!this.ops.begin(opId, "start_vms").created) return;
    this.log.info("start.resumed", { requestId: group.requestId, digest: group.digest, count: group.count });
    void this.runStart(opId, group, false);
  }

  /**
   * Why the group's image cannot be had here, if it cannot: its record is gone from the catalog,
   * or no datacenter (this one included) holds a copy to bring in. A group of it can never run.
   * A group with running instances whose bytes are here is not taken down for a lost record.
   */
  private async imageUnobtainable(group: VmGroupRecord): Promise<string | undefined> {
    const { digest, requestId } = group;
    const here = await this.store.has(digest);
    if (!(await this.catalog.getImage(digest))) {
      const vms = await this.catalog.listVms({ requestId });
      if (here && vms.some((v) => v.state === "running")) return undefined;
      return `image ${digest} is no longer in the catalog`;
    }
    if (here) return undefined;
    const present = (await this.catalog.listPlacements(digest)).filter((p) => p.state === "present");
    if (present.length === 0) return `no datacenter holds a copy of image ${digest}`;
    return undefined;
  }

  /** Brings the image in and boots the group; `created`: this request stored the group. */
  private async runStart(opId: string, group: VmGroupRecord, created: boolean): Promise<void> {
    const { requestId, digest } = group;
    try {
      this.ops.progress(opId, { phase: "image" });
      const gone = await this.imageUnobtainable(group);
      if (gone !== undefined) {
        await this.rollBack(group, gone);
        throw notFound(
          `${gone}: start request ${requestId} was rolled back; push the image, then start with a new request id`,
        );
      }
      const transfer = await this.ensureImage(opId, group);
      this.ops.progress(opId, { phase: "boot", chunks_done: 0, chunks_total: group.count });
      const vmIds = await this.instances.converge(group, (ready, total) =>
        this.ops.progress(opId, { phase: "boot", chunks_done: ready, chunks_total: total }),
      );
      this.log.info("start.done", { requestId, digest, vms: vmIds.length });
      this.ops.finish(opId, {
        start_vms: {
          datacenter: this.name,
          region: this.args.region,
          vm_ids: vmIds,
          transfer: transfer ?? null,
        },
        progress: { phase: "done", chunks_done: vmIds.length, chunks_total: vmIds.length },
      });
    } catch (e) {
      this.log.warn("start.failed", { requestId, digest, error: String(e) });
      // Not when it was rolled back already (its image went); a catalog that cannot say: try.
      if ((await this.catalog.getVmGroup(requestId).catch(() => group)) !== undefined) {
        await this.rollBackStart(group, created);
      }
      this.ops.fail(opId, e);
      // A failed transfer leaves chunks, a failed first boot an extracted image.
      void this.collector.collect("start.failed");
    }
  }

  /**
   * The group's image, present here (see ImagePuller.ensure). When the transfer fails because
   * the image went meanwhile (removed from the catalog, or from every datacenter holding it),
   * the group is rolled back: it can never run.
   */
  private async ensureImage(opId: string, group: VmGroupRecord): Promise<TransferSummary | undefined> {
    const { requestId, digest } = group;
    try {
      return await this.puller.ensure(digest, requestId, (p) =>
        this.ops.progress(opId, {
          phase: "transfer",
          bytes_done: p.bytesDone,
          bytes_total: p.bytesTotal,
          chunks_done: p.chunksDone,
          chunks_total: p.chunksTotal,
          rate: p.rate,
        }),
      );
    } catch (e) {
      // A catalog that cannot answer now rolls nothing back: the transfer's own error is thrown.
      const gone = await this.imageUnobtainable(group).catch(() => undefined);
      if (gone !== undefined) await this.rollBack(group, `${gone} (${String(e)})`);
      throw e;
    }
  }

  /** Stops the group's instances and forgets the group (its capacity is free again), logging why. */
  private async rollBack(group: VmGroupRecord, reason: string): Promise<void> {
    const { requestId, digest } = group;
    try {
      const stopped = await this.instances.stop(requestId);
      this.log.warn("start.rolled_back", { requestId, digest, reason, stopped });
    } catch (e) {
      this.log.warn("start.rollback_failed", { requestId, digest, reason, error: String(e) });
    }
  }

  /**
   * After a failed start: only a group this request created and none of whose instances ever
   * ran is rolled back (stopped and forgotten, nothing left behind). A group that was running
   * keeps its record and its running instances; the failed ones stay "failed", and a repeated
   * start starts them again.
   */
  private async rollBackStart(group: VmGroupRecord, created: boolean): Promise<void> {
    const { requestId } = group;
    const vms = await this.catalog.listVms({ requestId });
    const running = vms.filter((v) => v.state === "running").length;
    if (!created || running > 0) {
      this.log.info("start.kept", { requestId, created, running, failed: vms.length - running });
      return;
    }
    await this.rollBack(group, "its first start failed and none of its instances ever ran");
  }

  /** PlanStartVms: where a start would run and what it would transfer; changes nothing. */
  private async planStart(req: StartVmsRequest__Output): Promise<StartPlan> {
    const { digest, size } = await this.checkStart(req);
    const target = await this.pickDatacenter(req);
    const image = await this.catalog.getImage(digest);
    const placements = await this.catalog.listPlacements(digest);
    const here = placements.some((p) => p.datacenter === target.name && p.state === "present");
    const regionOf = new Map((await this.catalog.listDatacenters()).map((d) => [d.name, d.region]));
    const sources = placements
      .filter((p) => p.state === "present" && p.datacenter !== target.name)
      .sort(
        (a, b) =>
          Number(regionOf.get(b.datacenter) === target.region) -
          Number(regionOf.get(a.datacenter) === target.region),
      );
    return {
      datacenter: target.name,
      region: target.region,
      needs_transfer: !here,
      source: here ? "" : (sources[0]?.datacenter ?? ""),
      bytes: here ? 0 : (image?.sizeBytes ?? 0),
      vcpus: size.vcpus,
      memory_mib: size.memoryMiB,
    };
  }

  private async pickDatacenter(req: StartVmsRequest__Output): Promise<DatacenterRecord> {
    if (req.datacenter) {
      const dc = await this.catalog.getDatacenter(req.datacenter);
      if (!dc) {
        const known = (await this.catalog.listDatacenters()).map((d) => d.name).join(", ");
        throw notFound(
          `datacenter "${req.datacenter}" is not in the catalog (known: ${known}): check the name`,
        );
      }
      if (req.region && dc.region !== req.region) {
        throw invalid(
          `datacenter "${dc.name}" is in region "${dc.region}", not "${req.region}": name one or the other`,
        );
      }
      return dc;
    }
    if (!req.region) throw invalid("StartVms needs a datacenter or a region: set one of them");
    const dcs = await this.catalog.listDatacenters(req.region);
    if (dcs.length === 0) {
      const regions = (await this.catalog.listRegions()).join(", ");
      throw notFound(
        `region "${req.region}" has no datacenter in the catalog (regions: ${regions}): check the name`,
      );
    }
    // The datacenter with the most free vCPUs; ties go to the first by name.
    const free = await Promise.all(
      dcs.map(async (dc) => ({ dc, free: dc.capacity.vcpus - (await this.usedVcpus(dc.name)) })),
    );
    free.sort((a, b) => b.free - a.free || a.dc.name.localeCompare(b.dc.name));
    return free[0].dc;
  }

  private async usedVcpus(datacenter: string): Promise<number> {
    return (await this.catalog.listVmGroups(datacenter)).reduce((sum, g) => sum + g.vcpus * g.count, 0);
  }

  private async forward(
    req: StartVmsRequest__Output,
    target: DatacenterRecord,
    call: Incoming,
  ): Promise<Operation> {
    const metadata = this.hopTo(call, `StartVms ${req.request_id}`, target);
    if (req.forwarded_by) {
      throw precondition(
        `request ${req.request_id} was forwarded by ${req.forwarded_by} to ${this.name}, which is not ${target.name}: the catalog changed; retry`,
      );
    }
    this.log.info("start.forwarded", {
      requestId: req.request_id,
      to: target.name,
      endpoint: target.endpoint,
    });
    const client = new ClusterClient(target.endpoint, { metadata });
    try {
      return await client.startVms({ ...req, datacenter: target.name, forwarded_by: this.name });
    } catch (e) {
      throw GciError.isInstance(e) && e.code !== "UNAVAILABLE"
        ? e
        : new GciError(
            "UNAVAILABLE",
            `cluster manager of ${target.name} at ${target.endpoint} did not answer: ${String(e)}`,
          );
    } finally {
      client.close();
    }
  }

  /**
   * The metadata for forwarding `call` to `target`: its route one hop further; FAILED_PRECONDITION
   * naming the chain when the route loops or is too long (forwarding.ts).
   */
  private hopTo(call: Incoming, what: string, target: DatacenterRecord): Record<string, string> {
    const metadata = nextHop(what, routeOf(call.metadata), this.name, target);
    this.log.info("rpc.forwarded", {
      what,
      to: target.name,
      endpoint: target.endpoint,
      hops: metadata[HOPS_KEY],
    });
    return metadata;
  }

  /** A client for forwarding `call` to `target` (see hopTo). */
  private forwardClient(call: Incoming, what: string, target: DatacenterRecord): ClusterClient {
    return new ClusterClient(target.endpoint, { metadata: this.hopTo(call, what, target) });
  }

  /** A forwarding client of the cluster manager of `datacenter`, which owns what `what` is about. */
  private async ownerClient(call: Incoming, what: string, datacenter: string): Promise<ClusterClient> {
    const dc = await this.catalog.getDatacenter(datacenter);
    if (!dc) throw notFound(`datacenter ${datacenter} of ${what} is not in the catalog`);
    return this.forwardClient(call, what, dc);
  }

  /** The cluster manager that runs a start request's VMs: this one, or a client of another. */
  private async groupOwner(
    startRequestId: string,
    call: Incoming,
    what: string,
  ): Promise<{ group: VmGroupRecord; remote?: ClusterClient }> {
    checkId("start_request_id", startRequestId);
    const group = await this.catalog.getVmGroup(startRequestId);
    if (!group) throw notFound(`start request "${startRequestId}" has no VMs: list them with \`gci vm ls\``);
    if (group.datacenter === this.name) return { group };
    return {
      group,
      remote: await this.ownerClient(call, `${what} of start request ${startRequestId}`, group.datacenter),
    };
  }

  /** Runs `work` as an operation keyed by the request id; a repeated request returns it again. */
  private operation(opId: string, kind: string, work: () => Promise<Partial<Operation>>): Operation {
    const { op, created } = this.ops.begin(opId, kind);
    if (!created) return op;
    work().then(
      (result) => this.ops.finish(opId, { progress: { phase: "done" }, ...result }),
      (e) => this.ops.fail(opId, e),
    );
    return this.ops.get(opId);
  }

  private async scaleVms(req: ScaleVmsRequest__Output, call: Incoming): Promise<Operation> {
    const requestId = checkId("request_id", req.request_id);
    if (!Number.isInteger(req.count) || req.count < 1 || req.count > MAX_COUNT) {
      throw invalid(
        `count ${req.count} is out of range: scale to 1 to ${MAX_COUNT} VMs (stop the group to remove it)`,
      );
    }
    const { group, remote } = await this.groupOwner(req.start_request_id, call, "ScaleVms");
    if (remote) return withClient(remote, (c) => c.scaleVms(requestId, req.start_request_id, req.count));
    const scaled = { ...group, count: req.count };
    // One compare-and-swap, with the capacity check of a growth: the group is never absent
    // from the catalog, and two scales cannot both take the last free room.
    if (!(await this.catalog.updateVmGroup(group, scaled))) {
      throw precondition(
        `start request ${group.requestId} changed while this ScaleVms read it (another scale or a stop ` +
          `ran meanwhile): retry with a new request id`,
      );
    }
    failpoint("scale.record");
    this.log.info("scale.accepted", {
      requestId,
      startRequestId: group.requestId,
      from: group.count,
      to: req.count,
    });
    return this.operation(`scale-${requestId}`, "scale_vms", async () => ({
      start_vms: {
        datacenter: this.name,
        region: this.args.region,
        vm_ids: await this.instances.converge(scaled),
        transfer: null,
      },
    }));
  }

  private async stopVms(req: StopVmsRequest__Output, call: Incoming): Promise<Operation> {
    const requestId = checkId("request_id", req.request_id);
    const { group, remote } = await this.groupOwner(req.start_request_id, call, "StopVms");
    if (remote) {
      try {
        return await withClient(remote, (c) => c.stopVms(requestId, req.start_request_id, req.vm_ids));
      } catch (e) {
        if (!GciError.isInstance(e) || e.code !== "UNAVAILABLE") throw e;
        return this.forgetUnmanaged(requestId, group, req.vm_ids, e);
      }
    }
    return this.operation(`stop-${requestId}`, "stop_vms", async () => {
      const n = await this.instances.stop(group.requestId, req.vm_ids);
      this.log.info("stop.done", { requestId, startRequestId: group.requestId, stopped: n });
      return {};
    });
  }

  /**
   * StopVms of a whole group whose cluster manager does not answer (`down`): when none of its
   * VMs has a process (none booting, running or stopping; e.g. a group its cluster manager
   * accepted and died before starting anything), nothing runs to be stopped, so its records
   * are forgotten from here and its capacity is free. Otherwise UNAVAILABLE: only the owner
   * can stop its processes.
   */
  private async forgetUnmanaged(
    requestId: string,
    group: VmGroupRecord,
    vmIds: readonly string[],
    down: GciError,
  ): Promise<Operation> {
    const owner = group.datacenter;
    const restart = `start it again (gci world up), then stop again`;
    if (vmIds.length > 0) {
      throw unavailable(
        `the cluster manager of ${owner}, where start request ${group.requestId} runs, does not answer ` +
          `(${down.message}): ${restart}`,
      );
    }
    const vms = await this.catalog.listVms({ requestId: group.requestId });
    const live = vms.filter((v) => v.state === "booting" || v.state === "running" || v.state === "stopping");
    if (live.length > 0) {
      throw unavailable(
        `the cluster manager of ${owner} does not answer (${down.message}) and VMs ` +
          `${live.map((v) => `${v.id} (${v.state})`).join(", ")} of start request ${group.requestId} ` +
          `run there: ${restart}`,
      );
    }
    return this.operation(`stop-${requestId}`, "stop_vms", async () => {
      for (const vm of vms) await this.catalog.deleteVm(vm.id);
      await this.catalog.deleteVmGroup(group.requestId);
      this.log.warn("stop.forgotten", {
        requestId,
        startRequestId: group.requestId,
        owner,
        vms: vms.map((v) => `${v.id} (${v.state})`),
        reason: down.message,
      });
      return {};
    });
  }

  /** A VM's group for a listing: a bad group record (DATA_LOSS) is logged and listed without sizes. */
  private async groupForListing(requestId: string): Promise<VmGroupRecord | undefined> {
    try {
      return await this.catalog.getVmGroup(requestId);
    } catch (e) {
      if (!GciError.isInstance(e) || e.code !== "DATA_LOSS") throw e;
      this.log.warn("catalog.bad_record", { error: e.message });
      return undefined;
    }
  }

  /** The datacenter's VM record for an id, or NOT_FOUND. */
  private async vm(id: string): Promise<Vm__Output> {
    checkVmId("VM id", id);
    const record = await this.catalog.getVm(id);
    if (!record) throw notFound(`VM "${id}" is not known: list them with \`gci vm ls\``);
    return vmOutput(record, await this.catalog.getVmGroup(record.requestId));
  }

  private async replicate(req: ReplicateImageRequest__Output, call: Incoming): Promise<Operation> {
    const requestId = checkId("request_id", req.request_id);
    const digest = checkDigest(req.digest);
    if (!(await this.catalog.getImage(digest))) {
      throw notFound(`image ${digest} is not in the catalog: push it first with \`gci image push\``);
    }
    const target = await this.pickDatacenter({ datacenter: req.datacenter } as StartVmsRequest__Output);
    if (target.name !== this.name) {
      const metadata = this.hopTo(call, `ReplicateImage ${requestId}`, target);
      if (req.forwarded_by)
        throw precondition(`replicate ${requestId} was forwarded to the wrong datacenter; retry`);
      this.log.info("replicate.forwarded", { requestId, to: target.name });
      return withClient(new ClusterClient(target.endpoint, { metadata }), (c) =>
        c.replicateImage(requestId, digest, target.name),
      );
    }
    return this.operation(`replicate-${requestId}`, "replicate_image", async () => {
      try {
        const transfer = await this.puller.ensure(digest, requestId);
        return { transfer: transfer ?? null };
      } catch (e) {
        // The chunks a failed transfer received are unreferenced: the collector frees them.
        void this.collector.collect("replicate.failed");
        throw e;
      }
    });
  }
}

/** Refuses a duration option that is not a whole number of milliseconds, naming its flag. */
function checkMs(field: string, flag: string, value: number | undefined): void {
  if (value === undefined || (Number.isSafeInteger(value) && value >= 0)) return;
  throw invalid(
    `${field} ${String(value)} is not valid: give a whole number of milliseconds, 0 or more, e.g. ${flag} 60000`,
  );
}

async function withClient<T>(client: ClusterClient, fn: (c: ClusterClient) => Promise<T>): Promise<T> {
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

/** A VM as the API shows it: its record, with the size of its group. */
function vmOutput(record: VmRecord, group: VmGroupRecord | undefined): Vm__Output {
  return {
    id: record.id,
    request_id: record.requestId,
    datacenter: record.datacenter,
    image_digest: record.digest,
    state: record.state,
    addresses: Object.entries(record.addresses).map(([port, address]) => ({
      guest_port: Number(port),
      address,
    })),
    kind: record.id.startsWith("proc-") ? "process" : "vm",
    vcpus: group?.vcpus ?? 0,
    memory_mib: group?.memoryMiB ?? 0,
  };
}
