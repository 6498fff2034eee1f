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
import type { UploadHeader__Output } from "../../schema/gen/gci/v1/UploadHeader";
import type { Vm__Output } from "../../schema/gen/gci/v1/Vm";
import { Catalog, DatacenterRecord, openCatalog, VmGroupRecord, VmRecord } from "../catalog";
import { checkDigest, checkId } from "../catalog/validate";
import { ClusterClient } from "../client";
import { exhausted, GciError, invalid, notFound, precondition } from "../errors";
import { type ImageEntry, ImageStore } from "../image";
import { SERVER_OPTIONS, loadApi, loadHealthDefinition } from "../rpc/proto";
import { toStatus, unary } from "../rpc/status";
import { MACHINE_SIZES, MachineSize, machineSize } from "../vm/sizes";
import { InstanceManager } from "./instances";
import { Logger } from "./log";
import { Operations } from "./operations";
import { ImagePuller, transmit } from "./transfer";
import { UPLOAD_BUFFER_BYTES, type UploadCall, receiveUpload } from "./upload";
import { cgroupSupport } from "../vm/cgroup";

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

/** One datacenter's cluster manager: a gRPC server for images, VMs, operations and peer transfer. */
export class ClusterManager {
  readonly log: Logger;
  private readonly server = new grpc.Server(SERVER_OPTIONS);
  private readonly ops: Operations;
  private catalog!: Catalog;
  private store!: ImageStore;
  private puller!: ImagePuller;
  private instances!: InstanceManager;
  private heartbeat?: NodeJS.Timeout;
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
    this.log = new Logger(args.datacenter, args.logStream);
    this.ops = new Operations(args.datacenter);
  }

  get name(): string {
    return this.args.datacenter;
  }

  /** Opens the catalog and store, starts serving, registers the datacenter; returns its endpoint. */
  async start(): Promise<string> {
    const { datacenter, region } = this.args;
    this.catalog = await openCatalog(this.args.catalog);
    this.store = new ImageStore(path.join(this.args.dataDir, "images"));
    this.puller = new ImagePuller({
      datacenter,
      region,
      maxImageBytes: this.args.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES,
      store: this.store,
      catalog: this.catalog,
      log: this.log,
    });
    this.instances = new InstanceManager({
      datacenter,
      dataDir: this.args.dataDir,
      store: this.store,
      catalog: this.catalog,
      log: this.log,
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
    await this.instances.recover();
    await this.puller.resumeInterrupted();
    return this.endpoint;
  }

  /**
   * Stops serving (in-flight calls get up to `graceMs`), then closes the catalog. With
   * `stopInstances` (a datacenter shutting down, e.g. `gci world down`), its VMs and process
   * instances are stopped too; without it they keep running and a restart finds them again.
   */
  async stop(graceMs = 5000, stopInstances = false): Promise<void> {
    clearInterval(this.heartbeat);
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
        void transmit(
          this.store,
          this.log,
          call,
          this.args.maxTransferRate ?? 0,
          this.args.host ?? "127.0.0.1",
        );
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
      StartVms: unary(async (req) => this.startVms(req)),
      ListVms: unary(async (req) => {
        // The catalog is global: one start request's VMs are listed wherever they run.
        const records = await this.catalog.listVms(
          req.request_id ? { requestId: req.request_id } : { datacenter: this.name },
        );
        // One catalog read per group, not two per VM.
        const groups = new Map(
          await Promise.all(
            [...new Set(records.map((v) => v.requestId))].map(
              async (id) => [id, await this.catalog.getVmGroup(id)] as const,
            ),
          ),
        );
        return { vms: records.map((v) => vmOutput(v, groups.get(v.requestId))) };
      }),
      PlanStartVms: unary(async (req) => this.planStart(req)),
      ScaleVms: unary(async (req) => this.scaleVms(req)),
      GetVm: unary(async (req) => this.vm(req.id)),
      StopVms: unary(async (req) => this.stopVms(req)),
      RestartVm: unary(async (req) => {
        const requestId = checkId("request_id", req.request_id);
        const vm = await this.vm(req.vm_id);
        if (vm.datacenter !== this.name) {
          const dc = await this.catalog.getDatacenter(vm.datacenter);
          return withClient(new ClusterClient(dc!.endpoint), (c) => c.restartVm(requestId, vm.id));
        }
        return this.operation(`restart-${requestId}`, "restart_vm", async () => {
          await this.instances.restart(vm.id);
          return {};
        });
      }),
      GetVmLogs: unary(async (req) => {
        const vm = await this.vm(req.vm_id);
        if (vm.datacenter !== this.name) {
          const dc = await this.catalog.getDatacenter(vm.datacenter);
          return withClient(new ClusterClient(dc!.endpoint), async (c) => ({
            vm_id: vm.id,
            text: await c.getVmLogs(vm.id, req.tail_bytes),
          }));
        }
        return { vm_id: vm.id, text: this.instances.logs(vm.id, req.tail_bytes || 65536) };
      }),
      ReplicateImage: unary(async (req) => this.replicate(req)),
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

  private async deleteImage(requestId: string, digest: string): Promise<Image> {
    const image = await this.describeImage(digest);
    const users = (await this.catalog.listVmGroups(this.name)).filter((g) => g.digest === digest);
    if (users.length > 0) {
      throw precondition(
        `image ${digest} is used by VM groups ${users.map((g) => g.requestId).join(", ")} in ${this.name}: stop them first`,
      );
    }
    await this.store.delete(digest);
    await this.catalog.deletePlacement(digest, this.name);
    const left = (await this.catalog.listPlacements(digest)).filter((p) => p.state === "present");
    if (left.length === 0) await this.catalog.deleteImage(digest);
    this.log.info("image.deleted", { requestId, digest, copiesLeft: left.length });
    return { ...image, datacenters: left.map((p) => p.datacenter).sort() };
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
  private async startVms(req: StartVmsRequest__Output): Promise<Operation> {
    const { requestId, digest, size } = await this.checkStart(req);
    const target = await this.pickDatacenter(req);
    if (target.name !== this.name) return this.forward(req, target);

    const opId = `start-${requestId}`;
    const { op, created } = this.ops.begin(opId, "start_vms");
    if (!created) return op;
    try {
      const existing = await this.catalog.getVmGroup(requestId);
      if (existing && existing.digest !== digest) {
        throw invalid(
          `request id "${requestId}" was already used for image ${existing.digest}: use a new request id`,
        );
      }
      if (!existing) await this.checkCapacity(target, req.count, size, requestId);
      const group = await this.catalog.putVmGroupIfAbsent({
        requestId,
        datacenter: this.name,
        digest,
        count: req.count,
        vcpus: size.vcpus,
        memoryMiB: size.memoryMiB,
        createdAt: Date.now(),
      });
      this.log.info("start.accepted", {
        requestId,
        digest,
        count: group.count,
        vcpus: group.vcpus,
        memoryMiB: group.memoryMiB,
        forwardedBy: req.forwarded_by || undefined,
        repeated: existing !== undefined,
      });
      void this.runStart(opId, group);
    } catch (e) {
      this.ops.fail(opId, e);
      // A refused request leaves no operation behind, so a corrected retry with the same id is accepted.
      this.ops.forget(opId);
      throw e;
    }
    return this.ops.get(opId);
  }

  /** RESOURCE_EXHAUSTED, saying what is free, when the datacenter cannot hold `count` more of `size`. */
  private async checkCapacity(
    dc: DatacenterRecord,
    count: number,
    size: MachineSize,
    requestId: string,
  ): Promise<void> {
    const groups = (await this.catalog.listVmGroups(dc.name)).filter((g) => g.requestId !== requestId);
    const usedVcpus = groups.reduce((sum, g) => sum + g.vcpus * g.count, 0);
    const usedMemory = groups.reduce((sum, g) => sum + g.memoryMiB * g.count, 0);
    const freeVcpus = dc.capacity.vcpus - usedVcpus;
    const freeMemory = dc.capacity.memoryMiB - usedMemory;
    if (count * size.vcpus > freeVcpus || count * size.memoryMiB > freeMemory) {
      throw exhausted(
        `datacenter ${dc.name} has ${freeVcpus} of ${dc.capacity.vcpus} vCPUs and ${freeMemory} of ` +
          `${dc.capacity.memoryMiB} MiB free; ${count} x (${size.vcpus} vCPU, ${size.memoryMiB} MiB) does not fit: ` +
          `ask for fewer or smaller VMs, or another datacenter`,
      );
    }
  }

  private async runStart(opId: string, group: VmGroupRecord): Promise<void> {
    const { requestId, digest } = group;
    try {
      this.ops.progress(opId, { phase: "image" });
      const transfer = await this.puller.ensure(digest, requestId, (p) =>
        this.ops.progress(opId, {
          phase: "transfer",
          bytes_done: p.bytesDone,
          bytes_total: p.bytesTotal,
          chunks_done: p.chunksDone,
          chunks_total: p.chunksTotal,
          rate: p.rate,
        }),
      );
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
      // Nothing is left behind: the group's instances are stopped and the group forgotten.
      await this.instances.stop(requestId).catch(() => undefined);
      await this.catalog.deleteVmGroup(requestId).catch(() => undefined);
      this.ops.fail(opId, e);
    }
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

  private async forward(req: StartVmsRequest__Output, target: DatacenterRecord): Promise<Operation> {
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
    const client = new ClusterClient(target.endpoint);
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

  /** The cluster manager that runs a start request's VMs: this one, or a client of another. */
  private async groupOwner(
    startRequestId: string,
  ): Promise<{ group: VmGroupRecord; remote?: ClusterClient }> {
    checkId("start_request_id", startRequestId);
    const group = await this.catalog.getVmGroup(startRequestId);
    if (!group) throw notFound(`start request "${startRequestId}" has no VMs: list them with \`gci vm ls\``);
    if (group.datacenter === this.name) return { group };
    const dc = await this.catalog.getDatacenter(group.datacenter);
    if (!dc)
      throw notFound(
        `datacenter ${group.datacenter} of start request ${startRequestId} is not in the catalog`,
      );
    return { group, remote: new ClusterClient(dc.endpoint) };
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

  private async scaleVms(req: ScaleVmsRequest__Output): Promise<Operation> {
    const requestId = checkId("request_id", req.request_id);
    if (!Number.isInteger(req.count) || req.count < 1 || req.count > MAX_COUNT) {
      throw invalid(
        `count ${req.count} is out of range: scale to 1 to ${MAX_COUNT} VMs (stop the group to remove it)`,
      );
    }
    const { group, remote } = await this.groupOwner(req.start_request_id);
    if (remote) return withClient(remote, (c) => c.scaleVms(requestId, req.start_request_id, req.count));
    const dc = (await this.catalog.getDatacenter(this.name))!;
    if (req.count > group.count) {
      await this.checkCapacity(
        dc,
        req.count,
        { vcpus: group.vcpus, memoryMiB: group.memoryMiB },
        group.requestId,
      );
    }
    const scaled = { ...group, count: req.count };
    // The catalog keeps groups put-if-absent; a new count is a delete and a put.
    await this.catalog.deleteVmGroup(group.requestId);
    await this.catalog.putVmGroupIfAbsent(scaled);
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

  private async stopVms(req: StopVmsRequest__Output): Promise<Operation> {
    const requestId = checkId("request_id", req.request_id);
    const { group, remote } = await this.groupOwner(req.start_request_id);
    if (remote) return withClient(remote, (c) => c.stopVms(requestId, req.start_request_id, req.vm_ids));
    return this.operation(`stop-${requestId}`, "stop_vms", async () => {
      const n = await this.instances.stop(group.requestId, req.vm_ids);
      this.log.info("stop.done", { requestId, startRequestId: group.requestId, stopped: n });
      return {};
    });
  }

  /** The datacenter's VM record for an id, or NOT_FOUND. */
  private async vm(id: string): Promise<Vm__Output> {
    checkId("vm id", id);
    const record = await this.catalog.getVm(id);
    if (!record) throw notFound(`VM "${id}" is not known: list them with \`gci vm ls\``);
    return vmOutput(record, await this.catalog.getVmGroup(record.requestId));
  }

  private async replicate(req: ReplicateImageRequest__Output): Promise<Operation> {
    const requestId = checkId("request_id", req.request_id);
    const digest = checkDigest(req.digest);
    if (!(await this.catalog.getImage(digest))) {
      throw notFound(`image ${digest} is not in the catalog: push it first with \`gci image push\``);
    }
    const target = await this.pickDatacenter({ datacenter: req.datacenter } as StartVmsRequest__Output);
    if (target.name !== this.name) {
      if (req.forwarded_by)
        throw precondition(`replicate ${requestId} was forwarded to the wrong datacenter; retry`);
      this.log.info("replicate.forwarded", { requestId, to: target.name });
      return withClient(new ClusterClient(target.endpoint), (c) =>
        c.replicateImage(requestId, digest, target.name),
      );
    }
    return this.operation(`replicate-${requestId}`, "replicate_image", async () => {
      const transfer = await this.puller.ensure(digest, requestId);
      return { transfer: transfer ?? null };
    });
  }
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
